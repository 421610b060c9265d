/* The small libc of the demo kernel: port I/O, COM1 and a printf (the
 * mem* functions every kernel linking kpalloc must provide are in mem.c). */
#include "kernel.h"


#define COM1 0x3f8

void serial_init(void)
{
	outb(COM1 + 1, 0x00);	/* no interrupts */
	outb(COM1 + 3, 0x80);	/* DLAB */
	outb(COM1 + 0, 0x01);	/* 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03);	/* 8N1 */
	outb(COM1 + 2, 0xc7);	/* FIFO */
	outb(COM1 + 4, 0x0b);
}

static void serial_putc(char c)
{
	while (!(inb(COM1 + 5) & 0x20))
		;
	outb(COM1, (uint8_t)c);
}

static void put(char c)
{
	if (c == '\n')
		serial_putc('\r');
	serial_putc(c);
}

static void put_num(uint64_t v, unsigned base, int width, char pad, int negative)
{
	char buf[24];
	int n = 0;
	do {
		buf[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (negative)
		buf[n++] = '-';
	while (n < width--)
		put(pad);
	while (n)
		put(buf[--n]);
}

/* The next argument of a %d/%u/%x with `longs` l's or a z (size_t): the
 * widths differ between the 64-bit and the 32-bit demo kernel. */
static uint64_t next_unsigned(va_list *ap, int longs, int sized)
{
	if (sized)
		return va_arg(*ap, size_t);
	if (longs > 1)
		return va_arg(*ap, unsigned long long);
	return longs ? va_arg(*ap, unsigned long) : va_arg(*ap, unsigned);
}

static int64_t next_signed(va_list *ap, int longs, int sized)
{
	if (sized)
		return (int64_t)va_arg(*ap, size_t);
	if (longs > 1)
		return va_arg(*ap, long long);
	return longs ? va_arg(*ap, long) : va_arg(*ap, int);
}

void kvprintf(const char *fmt, va_list ap)
{
	/* A copy: a va_list parameter may be an array that decayed to a pointer. */
	va_list args;
	va_copy(args, ap);
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			put(*fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		int width = 0, longs = 0, sized = 0;
		if (*fmt == '0')
			pad = '0';
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		for (; *fmt == 'l' || *fmt == 'z'; fmt++) {
			if (*fmt == 'z')
				sized = 1;
			else
				longs++;
		}
		switch (*fmt) {
		case 'd': {
			int64_t v = next_signed(&args, longs, sized);
			put_num(v < 0 ? -(uint64_t)v : (uint64_t)v, 10, width, pad, v < 0);
			break;
		}
		case 'u':
			put_num(next_unsigned(&args, longs, sized), 10, width, pad, 0);
			break;
		case 'x':
			put_num(next_unsigned(&args, longs, sized), 16, width, pad, 0);
			break;
		case 'p':
			put('0');
			put('x');
			put_num((uintptr_t)va_arg(args, void *), 16, width, pad, 0);
			break;
		case 's': {
			const char *s = va_arg(args, const char *);
			for (s = s ? s : "(null)"; *s; s++)
				put(*s);
			break;
		}
		case 'c':
			put((char)va_arg(args, int));
			break;
		default:
			put(*fmt);
		}
	}
	va_end(args);
}

void kprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kvprintf(fmt, ap);
	va_end(ap);
}

_Noreturn void qemu_exit(int success)
{
	/* isa-debug-exit: qemu exits with (value << 1) | 1: 33 or 35. */
	outl(0xf4, success ? 0x10 : 0x11);
	for (;;)
		__asm__ volatile("cli; hlt");
}
