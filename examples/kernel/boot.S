/*
 * Multiboot1 entry of the kpalloc demo kernel: 32-bit protected mode from
 * the boot loader (qemu -kernel), boot page tables, long mode, then kmain()
 * at the kernel's link address. Also the interrupt entry stubs.
 *
 * Built with -DKBASE=<virtual address of physical 0 in the kernel mapping>:
 *   0xffffffff80000000  top 2 GiB (-mcmodel=kernel)
 *   0x8004000000        above 4 GiB, like KAIST Pintos (-mcmodel=large)
 */
#define V2P(x) ((x) - KBASE)

#define PML4I ((KBASE >> 39) & 511)
#define PDPTI ((KBASE >> 30) & 511)
#define PDI   ((KBASE >> 21) & 511)

#include "multiboot.h"

	/* Identity map of the first 1 GiB (2 MiB pages) for the switch. */
	movl $V2P(boot_pd_low), %edi
	movl $0x83, %eax		/* present, writable, 2 MiB page */
	movl $512, %ecx
1:	movl %eax, (%edi)
	addl $0x200000, %eax
	addl $8, %edi
	loop 1b

	/* KBASE + pa -> pa for as much as one page directory covers. */
	movl $(V2P(boot_pd_kernel) + 8 * PDI), %edi
	movl $0x83, %eax
	movl $(512 - PDI), %ecx
2:	movl %eax, (%edi)
	addl $0x200000, %eax
	addl $8, %edi
	loop 2b

	movl $(V2P(boot_pd_low) + 3), V2P(boot_pdpt_low)
	movl $(V2P(boot_pd_kernel) + 3), V2P(boot_pdpt_kernel) + 8 * PDPTI
	movl $(V2P(boot_pdpt_low) + 3), V2P(boot_pml4)
	movl $(V2P(boot_pdpt_kernel) + 3), V2P(boot_pml4) + 8 * PML4I

	movl %cr4, %eax
	orl $0x20, %eax			/* PAE */
	movl %eax, %cr4
	movl $V2P(boot_pml4), %eax
	movl %eax, %cr3
	movl $0xC0000080, %ecx		/* EFER */
	rdmsr
	orl $0x100, %eax		/* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG, PE */
	movl %eax, %cr0

	lgdt V2P(gdt_ptr32)
	ljmp $0x08, $V2P(start64_low)

	.code64
start64_low:
	movabs $start64, %rax
	jmp *%rax

	.text
start64:
	movabs $gdt_ptr64, %rax
	lgdt (%rax)
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	xorl %eax, %eax
	movw %ax, %fs
	movw %ax, %gs
	movabs $boot_stack_top, %rsp
	movl %esi, %edi			/* kmain(magic, mbi physical address) */
	movl %ebx, %esi
	movabs $kmain, %rax
	call *%rax
3:	cli
	hlt
	jmp 3b

/* Interrupt entry: vector and error code (0 where the CPU pushes none),
 * caller-saved registers, then isr_dispatch(frame). */
.macro ISR n
isr\n:
	.if (\n == 8) || (\n >= 10 && \n <= 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
	pushq $\n
	.else
	pushq $0
	pushq $\n
	.endif
	jmp isr_common
.endm

.altmacro
.macro ISRS from, to
	ISR \from
	.if \to-\from
	ISRS %(\from+1), \to
	.endif
.endm
	ISRS 0, 47

isr_common:
	pushq %rax
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	cld
	movq %rsp, %rdi
	movabs $isr_dispatch, %rax
	call *%rax
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rax
	addq $16, %rsp
	iretq

	.section .rodata
	.align 8
	.globl isr_table
.macro ISRADDR n
	.quad isr\n
.endm
.macro ISRADDRS from, to
	ISRADDR \from
	.if \to-\from
	ISRADDRS %(\from+1), \to
	.endif
.endm
isr_table:
	ISRADDRS 0, 47

	.align 16
gdt:
	.quad 0
	.quad 0x00AF9A000000FFFF	/* 0x08: 64-bit code */
	.quad 0x00CF92000000FFFF	/* 0x10: data */
gdt_end:
gdt_ptr32:
	.word gdt_end - gdt - 1
	.long V2P(gdt)
	.align 8
gdt_ptr64:
	.word gdt_end - gdt - 1
	.quad gdt

	.section .bss
	.align 4096
	.globl boot_pml4
boot_pml4:	.skip 4096
boot_pdpt_low:	.skip 4096
boot_pd_low:	.skip 4096
boot_pdpt_kernel: .skip 4096
boot_pd_kernel:	.skip 4096
	.align 16
	.globl boot_stack_bottom, boot_stack_top
boot_stack_bottom:
	.skip 65536
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
