/* PostgreSQL's send formats of binary COPY, shared by the ingest core's row encoder
 * (pg_bulk_ingest/_binrow.c) and the sink's native line (sink/_copyline.c), so that a value
 * is the same bytes whichever of them writes it. Both include this file; it needs Python.h. */
#ifndef PG_BULK_INGEST_PGSEND_H
#define PG_BULK_INGEST_PGSEND_H

#include <stdint.h>

#define NUMERIC_POS 0x0000
#define NUMERIC_NEG 0x4000
#define NUMERIC_WEIGHT_MAX 32767
#define NUMERIC_DSCALE_MAX 0x3FFF
#define USECS_PER_DAY INT64_C(86400000000)
#define USECS_PER_MINUTE INT64_C(60000000)
/* date(2000, 1, 1).toordinal(): PostgreSQL's epoch as a proleptic Gregorian ordinal. */
#define PG_EPOCH_ORDINAL 730120

static inline void
set_u16(char *at, uint16_t value)
{
    at[0] = (char)(value >> 8);
    at[1] = (char)value;
}

static inline void
set_u32(char *at, uint32_t value)
{
    at[0] = (char)(value >> 24);
    at[1] = (char)(value >> 16);
    at[2] = (char)(value >> 8);
    at[3] = (char)value;
}

static inline void
set_u64(char *at, uint64_t value)
{
    set_u32(at, (uint32_t)(value >> 32));
    set_u32(at + 4, (uint32_t)value);
}

/* Days from 0001-01-01 (day 1), as date.toordinal(). */
static inline long
ordinal(int year, int month, int day)
{
    static const int before_month[] = {0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    long y = year - 1;
    long days = y * 365 + y / 4 - y / 100 + y / 400 + before_month[month] + day;
    int leap = (year % 4 == 0) && (year % 100 != 0 || year % 400 == 0);
    return days + (month > 2 && leap);
}

/* Decimal text in plain notation, [-]digits[.digits], as read by `decimal_text`. */
typedef struct {
    int negative;
    Py_ssize_t first;       /* where its first significant digit is (length: none) */
    Py_ssize_t significant; /* its digits from there to the end */
    long scale;             /* its digits after the point */
} DecimalText;

/* Reads [-]digits[.digits]: 0, or -1 for any other text (exponent notation, NaN, ...). */
static int
decimal_text(const char *text, Py_ssize_t length, DecimalText *out)
{
    Py_ssize_t start = length > 0 && text[0] == '-', point = -1;
    for (Py_ssize_t i = start; i < length; i++) {
        if (text[i] == '.' && point < 0 && i > start) {
            point = i;
        } else if (text[i] < '0' || text[i] > '9') {
            return -1;
        }
    }
    if (length == start || point == length - 1)
        return -1;
    out->negative = (int)start;
    out->scale = point < 0 ? 0 : (long)(length - point - 1);
    Py_ssize_t first = start;
    while (first < length && (text[first] == '0' || text[first] == '.'))
        first++;
    out->first = first;
    out->significant = 0;
    for (Py_ssize_t i = first; i < length; i++)
        out->significant += text[i] != '.';
    return 0;
}

/* The most base-10000 digits `numeric_digits` writes for the text at display scale `scale`. */
static inline Py_ssize_t
numeric_room(const DecimalText *number, long scale)
{
    return (number->significant + (scale - number->scale) + 3 + 3) / 4 + 1;
}

/* NUMERIC's digits of the text at display scale `scale` (at least its own: a NUMERIC(p, s)
 * stores s fraction digits), into `digits` (numeric_room of them): how many there are, no
 * zero one ending them, and the weight of the first. As numeric_in reads the text, and as
 * _binary.numeric_field encodes its Decimal. */
static Py_ssize_t
numeric_digits(const char *text, Py_ssize_t length, const DecimalText *number, long scale,
               uint16_t *digits, long *weight)
{
    /* value = coefficient * 10**-scale = (coefficient * 10**shift) * 10000**quotient */
    long quotient = -((scale + 3) / 4);
    int shift = (int)(4 * -quotient - scale);
    /* The significant digits written, the zeros up to `scale`, then `shift` zeros. */
    Py_ssize_t total = number->significant ? number->significant + (scale - number->scale) + shift
                                           : 0;
    Py_ssize_t groups = (total + 3) / 4;
    /* The first group takes what is left over from whole groups of four. */
    Py_ssize_t in_group = total - 4 * (groups - 1), group = 0, position = number->first;
    unsigned word = 0; /* the group being read */
    for (Py_ssize_t i = 0; i < total; i++) {
        int next = 0;
        if (position < length) {
            if (text[position] == '.')
                position++;
            next = text[position++] - '0';
        }
        word = word * 10 + (unsigned)next;
        if (--in_group == 0) {
            digits[group++] = (uint16_t)word;
            word = 0;
            in_group = 4;
        }
    }
    Py_ssize_t ndigits = groups;
    while (ndigits > 0 && digits[ndigits - 1] == 0)
        ndigits--;
    *weight = groups ? (long)groups - 1 + quotient : 0;
    return ndigits;
}

#endif
