/*
 * vmd test guests: string helpers and a small printf for the SCLP console.
 * Output is collected per line and written with one Write Event Data each.
 * Conversions: %c %s %d %i %u %x %X %p %%, flags '-' '0' '+', a width, and the
 * length modifiers l and ll.
 */
#include <stdarg.h>
#include "guest.h"

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

static char line[2048];
static int line_len;

void flush(void)
{
    if (line_len) {
        sclp_write(line, line_len);
        line_len = 0;
    }
}

static void out(char c)
{
    line[line_len++] = c;
    if (c == '\n' || line_len == sizeof(line))
        flush();
}

void puts_raw(const char *s)
{
    while (*s)
        out(*s++);
}

static void out_padded(const char *s, int len, int width, int left, char pad)
{
    int n = width - len;

    if (!left)
        while (n-- > 0)
            out(pad);
    while (len--)
        out(*s++);
    if (left)
        while (n-- > 0)
            out(' ');
}

static int format_unsigned(char *buf, u64 v, unsigned base, int upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int n = 0, i;

    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    for (i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    char buf[32];
    int count = 0;

    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        int left = 0, plus = 0, width = 0, lng = 0, n;
        char pad = ' ';
        u64 v;

        if (*fmt != '%') {
            out(*fmt);
            count++;
            continue;
        }
        fmt++;
        for (;; fmt++) {
            if (*fmt == '-')
                left = 1;
            else if (*fmt == '+')
                plus = 1;
            else if (*fmt == '0')
                pad = '0';
            else
                break;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            lng = 1;
            fmt++;
        }
        switch (*fmt) {
        case 'c':
            buf[0] = (char)va_arg(ap, int);
            out_padded(buf, 1, width, left, ' ');
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);

            if (!s)
                s = "(null)";
            out_padded(s, strlen(s), width, left, ' ');
            break;
        }
        case 'd':
        case 'i': {
            s64 sv = lng ? va_arg(ap, long) : va_arg(ap, int);
            int neg = sv < 0;

            v = neg ? -(u64)sv : (u64)sv;
            n = 0;
            if (neg)
                buf[n++] = '-';
            else if (plus)
                buf[n++] = '+';
            n += format_unsigned(buf + n, v, 10, 0);
            out_padded(buf, n, width, left, (neg || plus) && pad == '0' ? ' ' : pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X':
            v = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
            n = format_unsigned(buf, v, *fmt == 'u' ? 10 : 16, *fmt == 'X');
            out_padded(buf, n, width, left, pad);
            break;
        case 'p':
            v = (u64)va_arg(ap, void *);
            buf[0] = '0';
            buf[1] = 'x';
            n = 2 + format_unsigned(buf + 2, v, 16, 0);
            out_padded(buf, n, width, left, ' ');
            break;
        case '%':
            out('%');
            break;
        default:
            out('%');
            out(*fmt);
            break;
        }
        count++;
    }
    va_end(ap);
    return count;
}
