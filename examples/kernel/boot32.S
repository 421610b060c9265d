/*
 * Multiboot1 entry of the 32-bit demo kernel (pintos32.c), laid out like
 * the original 80x86 Pintos: physical memory is mapped at PHYS_BASE
 * (0xc0000000), here its first 1 GiB with 4 MiB pages. Once running at
 * the high addresses the identity map is removed, so that a physical
 * address used as a pointer faults; then pintos_main(magic, multiboot
 * information's physical address) on a stack in .bss. Interrupts stay off.
 */
#define PHYS_BASE 0xc0000000
#define V2P(x) ((x) - PHYS_BASE)
/* Page directory entries of 4 MiB each: 1 GiB, the most a 3 GiB kernel
 * base leaves room for. */
#define MAPPED_PDES 256
#define KERNEL_PDE_OFFSET ((PHYS_BASE >> 22) * 4)

#include "multiboot.h"

	/* [0, 1 GiB) at 0 (for the switch) and at PHYS_BASE. */
	movl $V2P(boot_pd), %edi
	movl $0x83, %eax		/* present, writable, 4 MiB page */
	movl $MAPPED_PDES, %ecx
1:	movl %eax, (%edi)
	movl %eax, KERNEL_PDE_OFFSET(%edi)
	addl $0x400000, %eax
	addl $4, %edi
	loop 1b

	movl %cr4, %eax
	orl $0x10, %eax			/* PSE: 4 MiB pages */
	movl %eax, %cr4
	movl $V2P(boot_pd), %eax
	movl %eax, %cr3
	movl %cr0, %eax
	orl $0x80010000, %eax		/* PG, WP */
	movl %eax, %cr0
	movl $high, %eax
	jmp *%eax

high:
	/* No identity map from here on. */
	movl $boot_pd, %edi
	movl $MAPPED_PDES, %ecx
	xorl %eax, %eax
	rep stosl
	movl %cr3, %eax
	movl %eax, %cr3

	movl $stack_top, %esp
	pushl %ebx			/* multiboot information (physical) */
	pushl %esi			/* multiboot magic */
	call pintos_main
2:	cli
	hlt
	jmp 2b

	.section .bss
	.align 4096
boot_pd:
	.space 4096
	.align 16
stack:
	.space 16384
stack_top:
	.section .note.GNU-stack, "", @progbits
