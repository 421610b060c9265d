/*
 * The Multiboot1 start shared by boot.S (the 64-bit kernels) and boot32.S
 * (the 32-bit one). Included after V2P(x) is defined (the physical address
 * of link address x), it emits the Multiboot header and the entry point
 * _start32, which leaves the multiboot magic in %esi, the physical address
 * of the multiboot information in %ebx and .bss zeroed (boot page tables,
 * stack), and goes on with the code after the #include.
 */
#define MB_MAGIC 0x1BADB002
/* bit 1: memory map wanted; bit 16: load addresses in the header (qemu
 * then loads this flat image as it is: no ELF32 needed). */
#define MB_FLAGS 0x00010002

	.section .multiboot, "a"
	.align 4
mb_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
	.long V2P(mb_header)		/* header_addr */
	.long V2P(_kernel_start)	/* load_addr */
	.long V2P(_load_end)		/* load_end_addr */
	.long V2P(_kernel_end)		/* bss_end_addr: zeroed by the loader */
	.long V2P(_start32)		/* entry_addr */

	.section .text.boot, "ax"
	.code32
	.globl _start32
_start32:
	cli
	cld
	movl %eax, %esi			/* multiboot magic */

	/* Zero .bss ourselves (boot page tables, stack). */
	movl $V2P(_bss_start), %edi
	movl $V2P(_bss_end), %ecx
	subl %edi, %ecx
	xorl %eax, %eax
	rep stosb
