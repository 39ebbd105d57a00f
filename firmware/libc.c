/*
 * vmd firmware: string helpers, a small printf for the SCLP console, panic.
 *
 * Output collects per line and goes out with one SCLP Write Event Data per
 * line, which ends in CR LF as QEMU's firmware writes it (console_flush()
 * sends a partial line, such as the progress dots).
 * Conversions: %c %s %d %u %x %X %%, the flags '-' and '0', a width, and the
 * length modifier l.
 */
#include <stdarg.h>
#include "fw.h"

void *memset(void *s, int c, unsigned long n)
{
    u8 *p = s;

    while (n--)
        *p++ = (u8)c;
    return s;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    u8 *dp = d;
    const u8 *sp = s;

    while (n--)
        *dp++ = *sp++;
    return d;
}

int memcmp(const void *a, const void *b, unsigned long n)
{
    const u8 *x = a, *y = b;

    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}

unsigned long strlen(const char *s)
{
    unsigned long n = 0;

    while (s[n])
        n++;
    return n;
}

static char line[512];
static int line_len;
static int mid_line;                    /* something since the last newline */

void console_flush(void)
{
    if (line_len) {
        sclp_write(line, line_len);
        line_len = 0;
    }
}

/* Lines end in CR LF: -nographic puts the terminal in raw mode. */
static void out(char c)
{
    if (c == '\n') {
        line[line_len++] = '\r';
        line[line_len++] = '\n';
        mid_line = 0;
        console_flush();
        return;
    }
    mid_line = 1;
    line[line_len++] = c;
    if (line_len >= (int)sizeof(line) - 1)
        console_flush();
}

static void out_field(const char *s, int len, int width, int left, char pad)
{
    int fill = width - len;

    if (!left)
        for (; fill > 0; fill--)
            out(pad);
    while (len--)
        out(*s++);
    for (; fill > 0; fill--)
        out(' ');
}

static void vprint(const char *fmt, va_list ap)
{
    char digits[24];

    for (; *fmt; fmt++) {
        int left = 0, width = 0, is_long = 0, n = 0;
        char pad = ' ';
        unsigned base = 10;
        const char *set = "0123456789abcdef";
        u64 v;

        if (*fmt != '%') {
            out(*fmt);
            continue;
        }
        fmt++;
        for (;; fmt++) {
            if (*fmt == '-')
                left = 1;
            else if (*fmt == '0')
                pad = '0';
            else
                break;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            is_long = 1;
            fmt++;
        }
        switch (*fmt) {
        case 'c':
            digits[0] = (char)va_arg(ap, int);
            out_field(digits, 1, width, left, ' ');
            continue;
        case 's': {
            const char *s = va_arg(ap, const char *);

            if (!s)
                s = "(null)";
            out_field(s, strlen(s), width, left, ' ');
            continue;
        }
        case 'd': {
            s64 sv = is_long ? va_arg(ap, long) : va_arg(ap, int);

            if (sv < 0) {
                out('-');
                width--;
                sv = -sv;
            }
            v = (u64)sv;
            break;
        }
        case 'u':
            v = is_long ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
            break;
        case 'X':
            set = "0123456789ABCDEF";
            /* fall through */
        case 'x':
            v = is_long ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
            base = 16;
            break;
        case '%':
            out('%');
            continue;
        default:
            out('%');
            out(*fmt);
            continue;
        }
        do {
            digits[sizeof(digits) - 1 - n++] = set[v % base];
            v /= base;
        } while (v);
        out_field(digits + sizeof(digits) - n, n, width, left, left ? ' ' : pad);
    }
}

/* Error reports start on a line of their own, even after progress dots. */
void console_start_line(void)
{
    if (mid_line)
        out('\n');
}

int printf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprint(fmt, ap);
    va_end(ap);
    return 0;
}

noreturn void panic(u64 code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprint(fmt, ap);
    va_end(ap);
    console_flush();
    disabled_wait(code);
}
