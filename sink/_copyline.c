/* From a Kafka message's JSON bytes straight to the COPY line of its row, in C.
 *
 * The native form of sink/copytext.py's fast path: `Line(columns, row_type, fallback,
 * key_format)` compiles one table's columns (each a top-level field of a JSON object value and
 * the kind of its column, see sink/kinds.py), and `Line.row(key, value)` gives the row's
 * `row_type` (CopyRow) without building any Python object for the JSON. The whole document is
 * validated as orjson would read it. Numbers for NUMERIC and jsonb columns are copied as
 * written, which stores the digits the Python paths keep (see mapping.Mapper). Wherever this
 * code is not sure its text is read as the value the Python path stores (an escape it does not
 * decode, a number it would have to round, a date its shape alone does not make valid, ...),
 * it hands the message to `fallback(key, value)`, the Python path, which gives the row or None
 * and makes every error message. So it only ever gives a row PostgreSQL stores as it stores
 * the Python path's; tests/unit/sink/test_copyline.py checks that.
 *
 * `AvroLine` (sink/_avroline.h) gives the same rows from Avro values, through a Line.
 *
 * Two helpers serve those Python paths: `numbers_round_trip(document)`, whether every number
 * in a JSON document reads through orjson as a value whose Python text is the number written,
 * and `holds_float(value)`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../pg_bulk_ingest/_pgsend.h"

/* The column kinds, numbered from 1 in this order. The module exports them as KINDS ({"INT": 1,
 * ...}), and sink/copytext.py refuses to import unless they are sink.kinds.Native. */
#define KIND_LIST(X) \
    X(INT)           \
    X(TEXT)          \
    X(NUMERIC)       \
    X(FLOAT)         \
    X(BOOL)          \
    X(JSONB)         \
    X(TIMESTAMPTZ)   \
    X(TIMESTAMP)     \
    X(DATE)          \
    X(UUID)          \
    X(TEXT_ARRAY)
#define KIND_ENUM(name) K_##name,
enum kind { K_NONE = 0, KIND_LIST(KIND_ENUM) K_END };
#undef KIND_ENUM
enum key_format { KEY_BYTES = 0, KEY_TEXT = 1, KEY_JSON = 2 };

#define MAX_DEPTH 512        /* orjson refuses 1024 levels; deeper documents take the fallback */
#define MAX_INT_DIGITS 19    /* fits uint64; longer integers take the fallback */
#define MAX_NUMBER_CHARS 64  /* a longer number with a fraction or exponent takes the fallback */
#define REAL_MAX 3.4028234663852886e38

typedef struct {
    char *name;
    Py_ssize_t name_len;
    int kind;
    long long a, b; /* INT: low, high; TEXT: max chars or -1; NUMERIC: whole, fraction digits */
    int required;
    /* In binary mode, NUMERIC: the display scale of its values, or -1 for the one written;
     * TEXT_ARRAY: the OID its field names for its elements. */
    long long binary;
} Column;

typedef struct {
    PyObject_HEAD
    Py_ssize_t count;
    Column *columns;
    PyObject *row_type;
    PyObject *fallback;
    int key_format;
    int binary;       /* a binary COPY tuple (CopyTuple) per row, not a line of COPY text */
    int bytes_rows;   /* row_type is a subclass of bytes: rows are made as new_tuple does */
    PyObject *loads;  /* binary mode: orjson's, for jsonb (see put_jsonb_field) */
    PyObject *dumps;
} Line;

/* Where a column's value is in the document: [start, end), or start NULL when absent. */
typedef struct {
    const unsigned char *start, *end;
} Span;

typedef struct {
    char *data;
    size_t len, cap;
    int raw; /* the text of a binary field: no COPY text escaping */
    char local[1024];
} Out;

/* ---- output buffer ---- */

static int out_reserve(Out *out, size_t more) {
    size_t need = out->len + more;
    if (need <= out->cap) return 0;
    size_t cap = out->cap * 2 > need ? out->cap * 2 : need;
    char *data;
    if (out->data == out->local) {
        data = PyMem_Malloc(cap);
        if (data) memcpy(data, out->local, out->len);
    } else {
        data = PyMem_Realloc(out->data, cap);
    }
    if (!data) return -1;
    out->data = data;
    out->cap = cap;
    return 0;
}

static inline int out_put(Out *out, const void *bytes, size_t n) {
    if (out->len + n > out->cap && out_reserve(out, n) < 0) return -1;
    memcpy(out->data + out->len, bytes, n);
    out->len += n;
    return 0;
}

static void out_free(Out *out) {
    if (out->data != out->local) PyMem_Free(out->data);
}

/* ---- validation, as orjson reads JSON (anything doubtful is refused: -1) ---- */

typedef struct {
    const unsigned char *p, *end;
    int inexact; /* a number was read that may not read back as written: see numbers_as_written */
} Reader;

/* Eight bytes at a time: whether a word holds a byte below 0x20, '"', '\\' or any byte from
 * 0x80 on (what ends a run of plain ASCII in a JSON string). */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline uint64_t word_at(const unsigned char *p) {
    uint64_t word;
    memcpy(&word, p, sizeof word);
    return word;
}
static inline int plain_ascii_word(uint64_t word) {
    uint64_t quote = word ^ (ONES * '"'), backslash = word ^ (ONES * '\\');
    uint64_t special = (word - ONES * 0x20) | (quote - ONES) | (backslash - ONES);
    /* A byte below 0x20 or equal to one of the two borrows into its high bit, where the byte
     * itself has none; bytes from 0x80 on are refused outright. */
    return ((word | (special & ~word)) & HIGHS) == 0;
}

static inline void skip_ws(Reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\t' || *r->p == '\r'))
        r->p++;
}

/* One UTF-8 sequence starting at p (a byte >= 0x80): its length, or 0 when invalid (overlong,
 * a surrogate, beyond U+10FFFF, cut short). */
static int utf8_length(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    if (c >= 0xC2 && c <= 0xDF) {
        return (end - p >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && p[1] >= 0xA0) return 0; /* a surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && p[1] >= 0x90) return 0; /* beyond U+10FFFF */
        return 4;
    }
    return 0;
}

static int hex4(const unsigned char *p, unsigned *value) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    *value = v;
    return 0;
}

/* A \u escape at p (pointing at the backslash): the code point and the bytes it takes, or -1
 * for a lone surrogate or bad hex. */
static int unicode_escape(const unsigned char *p, const unsigned char *end, unsigned *code) {
    unsigned high, low;
    if (end - p < 6 || hex4(p + 2, &high) < 0) return -1;
    if (high >= 0xDC00 && high <= 0xDFFF) return -1;
    if (high < 0xD800 || high > 0xDBFF) {
        *code = high;
        return 6;
    }
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, &low) < 0) return -1;
    if (low < 0xDC00 || low > 0xDFFF) return -1;
    *code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
    return 12;
}

/* A string at r->p (the opening quote): moves past it. `escaped` tells whether it holds a
 * backslash escape. */
static int scan_string(Reader *r, int *escaped) {
    const unsigned char *p = r->p + 1, *end = r->end;
    *escaped = 0;
    while (p < end) {
        while (end - p >= 8 && plain_ascii_word(word_at(p))) p += 8;
        if (p >= end) break;
        unsigned c = *p;
        if (c == '"') {
            r->p = p + 1;
            return 0;
        }
        if (c < 0x20) return -1;
        if (c == '\\') {
            *escaped = 1;
            if (p + 1 >= end) return -1;
            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p += 2;
                break;
            case 'u': {
                unsigned code;
                int n = unicode_escape(p, end, &code);
                if (n < 0) return -1;
                p += n;
                break;
            }
            default:
                return -1;
            }
        } else if (c >= 0x80) {
            int n = utf8_length(p, end);
            if (n == 0) return -1;
            p += n;
        } else {
            p++;
        }
    }
    return -1;
}

/* The finite double a number token reads as (as orjson reads it), or -1: longer than
 * MAX_NUMBER_CHARS, or infinity. */
static int finite_double(const unsigned char *start, const unsigned char *end, double *value) {
    char buf[MAX_NUMBER_CHARS + 1];
    size_t n = (size_t)(end - start);
    if (n > MAX_NUMBER_CHARS) return -1;
    memcpy(buf, start, n);
    buf[n] = '\0';
    *value = PyOS_string_to_double(buf, NULL, NULL);
    if (*value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return isfinite(*value) ? 0 : -1;
}

/* A number at r->p: moves past it. `integral`: no fraction and no exponent. A number orjson
 * reads as infinity, or an integer of more than MAX_INT_DIGITS digits, is refused. */
static int scan_number(Reader *r, int *integral) {
    const unsigned char *p = r->p, *end = r->end, *digits;
    if (p < end && *p == '-') p++;
    digits = p;
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++;
    } else {
        return -1;
    }
    *integral = 1;
    if (p < end && *p == '.') {
        *integral = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9') return -1;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *integral = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return -1;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (*integral) {
        if (p - digits > MAX_INT_DIGITS) return -1;
        if (p - digits > 18) r->inexact = 1;
    } else {
        r->inexact = 1;
        double value;
        if (finite_double(r->p, p, &value) < 0) return -1;
    }
    r->p = p;
    return 0;
}

static int scan_literal(Reader *r, const char *word, size_t n) {
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return -1;
    r->p += n;
    return 0;
}

static int scan_value(Reader *r, int depth);

static int scan_container(Reader *r, int depth, unsigned char close) {
    int escaped;
    if (depth > MAX_DEPTH) return -1;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            if (r->p >= r->end || *r->p != '"' || scan_string(r, &escaped) < 0) return -1;
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':') return -1;
            r->p++;
            skip_ws(r);
        }
        if (scan_value(r, depth + 1) < 0) return -1;
        skip_ws(r);
        if (r->p >= r->end) return -1;
        if (*r->p == ',') {
            r->p++;
            skip_ws(r);
            continue;
        }
        if (*r->p != close) return -1;
        r->p++;
        return 0;
    }
}

/* One value at r->p (no leading whitespace): moves past it. */
static int scan_value(Reader *r, int depth) {
    int flag;
    if (r->p >= r->end) return -1;
    switch (*r->p) {
    case '{':
        return scan_container(r, depth, '}');
    case '[':
        return scan_container(r, depth, ']');
    case '"':
        return scan_string(r, &flag);
    case 't':
        return scan_literal(r, "true", 4);
    case 'f':
        return scan_literal(r, "false", 5);
    case 'n':
        return scan_literal(r, "null", 4);
    default:
        return scan_number(r, &flag);
    }
}

/* A whole document of one value, with whitespace around it. */
static int valid_document(const unsigned char *p, Py_ssize_t n) {
    Reader r = {p, p + n};
    skip_ws(&r);
    if (scan_value(&r, 0) < 0) return -1;
    skip_ws(&r);
    return r.p == r.end ? 0 : -1;
}

/* Text that is valid UTF-8, as bytes.decode() requires. */
static int valid_utf8(const unsigned char *p, Py_ssize_t n) {
    const unsigned char *end = p + n;
    while (p < end) {
        if (*p < 0x80) {
            p++;
        } else {
            int k = utf8_length(p, end);
            if (k == 0) return -1;
            p += k;
        }
    }
    return 0;
}

/* ---- COPY text of one column ---- */

static int digits(const unsigned char *p, int n) {
    for (int i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9') return 0;
    return 1;
}

static int two(const unsigned char *p) { return (p[0] - '0') * 10 + (p[1] - '0'); }

/* YYYY-MM-DD with month 01-12, a day of that month, year from 0001: a real date (as
 * date.fromisoformat reads it). */
static int sure_day(const unsigned char *p, Py_ssize_t n) {
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n < 10 || !digits(p, 4) || p[4] != '-' || !digits(p + 5, 2) || p[7] != '-' ||
        !digits(p + 8, 2))
        return 0;
    if (memcmp(p, "0000", 4) == 0) return 0;
    int year = two(p) * 100 + two(p + 2), month = two(p + 5), day = two(p + 8);
    if (month < 1 || month > 12 || day < 1) return 0;
    int leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    return day <= month_days[month - 1] + (month == 2 && leap);
}

/* A sure day, [T ], hh:mm:ss with hour 00-23, minute and second 00-59, then at most six
 * fraction digits: the length it takes, or 0. */
static Py_ssize_t sure_clock(const unsigned char *p, Py_ssize_t n) {
    if (n < 19 || !sure_day(p, 10) || (p[10] != 'T' && p[10] != ' ')) return 0;
    const unsigned char *c = p + 11;
    if (!digits(c, 2) || c[2] != ':' || !digits(c + 3, 2) || c[5] != ':' || !digits(c + 6, 2))
        return 0;
    if (two(c) > 23 || two(c + 3) > 59 || two(c + 6) > 59) return 0;
    Py_ssize_t at = 19;
    if (at < n && p[at] == '.') {
        Py_ssize_t k = 0;
        while (at + 1 + k < n && p[at + 1 + k] >= '0' && p[at + 1 + k] <= '9') k++;
        if (k < 1 || k > 6) return 0;
        at += 1 + k;
    }
    return at;
}

/* [+-]hh[[:]mm] with hour 00-14 and minute 00-59, or Z: PostgreSQL's accepted offsets. */
static int sure_offset(const unsigned char *p, Py_ssize_t n) {
    if (n == 1 && p[0] == 'Z') return 1;
    if (n < 3 || (p[0] != '+' && p[0] != '-') || !digits(p + 1, 2) || two(p + 1) > 14) return 0;
    if (n == 3) return 1;
    if (n == 5) return digits(p + 3, 2) && two(p + 3) <= 59;
    return n == 6 && p[3] == ':' && digits(p + 4, 2) && two(p + 4) <= 59;
}

/* Nothing, Z, +00, +0000 or +00:00: UTC. */
static int utc_offset(const unsigned char *p, Py_ssize_t n) {
    if (n == 0 || (n == 1 && p[0] == 'Z')) return 1;
    if (n == 3) return memcmp(p, "+00", 3) == 0;
    if (n == 5) return memcmp(p, "+0000", 5) == 0;
    return n == 6 && memcmp(p, "+00:00", 6) == 0;
}

static int hex_digit(unsigned c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int uuid_shape(const unsigned char *p, Py_ssize_t n) {
    if (n != 36) return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (p[i] != '-') return 0;
        } else if (!hex_digit(p[i])) {
            return 0;
        }
    }
    return 1;
}

/* -?d{1,whole}(.d{1,fraction})? */
static int decimal_shape(const unsigned char *p, Py_ssize_t n, long long whole, long long fraction) {
    Py_ssize_t i = 0, k = 0;
    if (i < n && p[i] == '-') i++;
    while (i + k < n && p[i + k] >= '0' && p[i + k] <= '9') k++;
    if (k < 1 || k > whole) return 0;
    i += k;
    if (i == n) return 1;
    if (p[i] != '.' || fraction == 0) return 0;
    i++;
    k = 0;
    while (i + k < n && p[i + k] >= '0' && p[i + k] <= '9') k++;
    return k >= 1 && k <= fraction && i + k == n;
}

/* The magnitude of an integer token of at most MAX_INT_DIGITS digits. */
static unsigned long long magnitude_of(const unsigned char *p, Py_ssize_t n) {
    unsigned long long magnitude = 0;
    for (Py_ssize_t i = p[0] == '-'; i < n; i++) magnitude = magnitude * 10 + (p[i] - '0');
    return magnitude;
}

/* An integer token within [low, high] (low < 0 <= high). "-0" is refused: Python's text of it
 * is "0". */
static int integer_in(const unsigned char *p, Py_ssize_t n, long long low, long long high) {
    if (n - (p[0] == '-') > MAX_INT_DIGITS || (n == 2 && p[0] == '-' && p[1] == '0')) return 0;
    unsigned long long magnitude = magnitude_of(p, n);
    if (p[0] == '-') return magnitude <= (unsigned long long)(-(low + 1)) + 1;
    return magnitude <= (unsigned long long)high;
}

static int put_escaped_byte(Out *out, unsigned char c) {
    if (out->raw) return out_put(out, &c, 1);
    switch (c) {
    case '\\': return out_put(out, "\\\\", 2);
    case '\t': return out_put(out, "\\t", 2);
    case '\n': return out_put(out, "\\n", 2);
    case '\r': return out_put(out, "\\r", 2);
    default: return out_put(out, &c, 1);
    }
}

/* Bytes escaped for COPY, copied in runs between the bytes that need it. */
static int put_escaped(Out *out, const unsigned char *p, const unsigned char *end) {
    const unsigned char *run = p;
    if (out->raw) return out_put(out, p, (size_t)(end - p));
    for (; p < end; p++) {
        unsigned char c = *p;
        if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
            if (out_put(out, run, (size_t)(p - run)) < 0 || put_escaped_byte(out, c) < 0)
                return -1;
            run = p + 1;
        }
    }
    return out_put(out, run, (size_t)(end - run));
}

static int put_code_point(Out *out, unsigned code) {
    unsigned char b[4];
    size_t n;
    if (code < 0x80) return put_escaped_byte(out, (unsigned char)code);
    if (code < 0x800) {
        b[0] = (unsigned char)(0xC0 | (code >> 6));
        b[1] = 0x80 | (code & 0x3F);
        n = 2;
    } else if (code < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (code >> 12));
        b[1] = 0x80 | ((code >> 6) & 0x3F);
        b[2] = 0x80 | (code & 0x3F);
        n = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (code >> 18));
        b[1] = 0x80 | ((code >> 12) & 0x3F);
        b[2] = 0x80 | ((code >> 6) & 0x3F);
        b[3] = 0x80 | (code & 0x3F);
        n = 4;
    }
    return out_put(out, b, n);
}

/* The text of a validated JSON string (its content, between the quotes), decoded and escaped
 * for COPY; `chars` counts its characters. -1 for a NUL (PostgreSQL cannot store it) or no
 * memory. */
static int put_string(Out *out, const unsigned char *p, const unsigned char *end, long long *chars) {
    *chars = 0;
    while (p < end) {
        const unsigned char *plain = p;
        while (p < end && *p != '\\') {
            if ((*p & 0xC0) != 0x80) (*chars)++;
            p++;
        }
        if (p > plain && out_put(out, plain, (size_t)(p - plain)) < 0) return -1;
        if (p >= end) break;
        unsigned code;
        switch (p[1]) {
        case 'b': code = '\b'; break;
        case 'f': code = '\f'; break;
        case 'n': code = '\n'; break;
        case 'r': code = '\r'; break;
        case 't': code = '\t'; break;
        case 'u': {
            int n = unicode_escape(p, end, &code);
            if (n < 0 || code == 0) return -1;
            p += n;
            (*chars)++;
            if (put_code_point(out, code) < 0) return -1;
            continue;
        }
        default: code = p[1]; /* " \ / */
        }
        p += 2;
        (*chars)++;
        if (put_escaped_byte(out, (unsigned char)code) < 0) return -1;
    }
    return 0;
}

/* Python's repr() of a double read from a number token: orjson's float, as the Python path
 * writes it. */
static int put_float(Out *out, const unsigned char *p, const unsigned char *end, int single) {
    double value;
    if (finite_double(p, end, &value) < 0 || (single && fabs(value) > REAL_MAX)) return -1;
    char *text = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!text) {
        PyErr_Clear();
        return -1;
    }
    int status = out_put(out, text, strlen(text));
    PyMem_Free(text);
    return status;
}

/* A JSON value for a jsonb column: its text as it is, escaped for COPY. jsonb stores a number
 * exactly as written (1.10 keeps its scale, 12345678901234567890 its digits), as the Python
 * path does with the message's exact numbers (see mapping.Mapper); keys, whitespace and escapes
 * other than \u0000 do not change what jsonb stores. */
static int put_jsonb(Out *out, const unsigned char *p, const unsigned char *end) {
    while (p < end) {
        unsigned char c = *p;
        const unsigned char *q = p + 1;
        if (c == '"') {
            while (*q != '"') {
                if (*q == '\\') {
                    if (q[1] == 'u' && memcmp(q + 2, "0000", 4) == 0) return -1;
                    q += 2;
                } else {
                    q++;
                }
            }
            q++;
            if (put_escaped(out, p, q) < 0) return -1;
        } else {
            /* Structure, numbers, whitespace and literals, up to the next string. */
            while (q < end && *q != '"') q++;
            if (put_escaped(out, p, q) < 0) return -1;
        }
        p = q;
    }
    return 0;
}

/* The text of a string array, {"a","b"}, when no element needs quoting or escaping. */
static int put_text_array(Out *out, const unsigned char *p, const unsigned char *end) {
    Reader r = {p + 1, end};
    skip_ws(&r);
    if (r.p < r.end && *r.p == ']') return out_put(out, "{}", 2);
    if (out_put(out, "{", 1) < 0) return -1;
    for (;;) {
        int escaped;
        const unsigned char *start = r.p;
        if (r.p >= r.end || *r.p != '"' || scan_string(&r, &escaped) < 0 || escaped) return -1;
        if (out_put(out, start, (size_t)(r.p - start)) < 0) return -1;
        skip_ws(&r);
        if (*r.p == ']') return out_put(out, "}", 1);
        r.p++; /* the comma */
        skip_ws(&r);
        if (out_put(out, ",", 1) < 0) return -1;
    }
}

/* For a value's span: 1 for an integer token, 0 for a number with a fraction or an exponent,
 * -1 for anything else. */
static int integral_number(const unsigned char *p, Py_ssize_t n) {
    if (*p != '-' && (*p < '0' || *p > '9')) return -1;
    return digits(p + (*p == '-'), (int)(n - (*p == '-')));
}

/* The content of a string value without escapes (between its quotes), or NULL. */
static const unsigned char *plain_string(Span span, Py_ssize_t *n) {
    if (*span.start != '"') return NULL;
    const unsigned char *p = span.start + 1;
    *n = span.end - 1 - p;
    return memchr(p, '\\', (size_t)*n) ? NULL : p;
}

/* One column's COPY text: 0, or -1 to take the fallback. */
static int put_column(Out *out, const Column *column, Span span) {
    const unsigned char *p = span.start;
    Py_ssize_t n = span.end - span.start;
    long long chars;
    if (p == NULL || *p == 'n') {
        return column->required ? -1 : out_put(out, "\\N", 2);
    }
    /* No default: the compiler warns (-Wswitch) of a kind added to KIND_LIST without a case. */
    switch ((enum kind)column->kind) {
    case K_NONE:
    case K_END:
        break;
    case K_INT:
        if (integral_number(p, n) != 1 || !integer_in(p, n, column->a, column->b)) return -1;
        return out_put(out, p, (size_t)n);
    case K_TEXT: {
        if (*p != '"') return -1;
        size_t before = out->len;
        if (put_string(out, p + 1, span.end - 1, &chars) < 0) return -1;
        if (column->a >= 0 && chars > column->a) {
            out->len = before;
            return -1;
        }
        return 0;
    }
    case K_NUMERIC: {
        /* A decimal string, or a number token, whose digits fit: copied as written, so the
         * digits stored are the message's, not those of a float read from it. */
        Py_ssize_t k;
        const unsigned char *text = plain_string(span, &k);
        if (text != NULL)
            return decimal_shape(text, k, column->a, column->b) ? out_put(out, text, (size_t)k) : -1;
        if (integral_number(p, n) < 0 || !decimal_shape(p, n, column->a, column->b)) return -1;
        if (n == 2 && p[0] == '-' && p[1] == '0') return -1; /* "0" in Python */
        return out_put(out, p, (size_t)n);
    }
    case K_FLOAT:
        if (integral_number(p, n) != 0) return -1; /* an int is not a float, in Python */
        return put_float(out, p, span.end, (int)column->a);
    case K_BOOL:
        if (*p == 't') return out_put(out, "t", 1);
        if (*p == 'f') return out_put(out, "f", 1);
        return -1;
    case K_JSONB:
        return put_jsonb(out, p, span.end);
    case K_TIMESTAMPTZ:
    case K_TIMESTAMP:
    case K_DATE: {
        Py_ssize_t k, at;
        const unsigned char *text = plain_string(span, &k);
        if (text == NULL) return -1;
        if (column->kind == K_DATE) {
            if (k != 10 || !sure_day(text, k)) return -1;
        } else {
            at = sure_clock(text, k);
            if (at == 0) return -1;
            if (column->kind == K_TIMESTAMPTZ ? !sure_offset(text + at, k - at)
                                              : !utc_offset(text + at, k - at))
                return -1;
        }
        return out_put(out, text, (size_t)k);
    }
    case K_UUID: {
        Py_ssize_t k;
        const unsigned char *text = plain_string(span, &k);
        if (text == NULL || !uuid_shape(text, k)) return -1;
        return out_put(out, text, (size_t)k);
    }
    case K_TEXT_ARRAY:
        if (*p != '[') return -1;
        return put_text_array(out, p, span.end);
    }
    return -1;
}

/* ---- binary COPY field of one column ----
 *
 * The same values as the COPY text above, in PostgreSQL's send format: the bytes
 * pg_bulk_ingest._binary gives for the value the general path makes of the field (the formats
 * shared with its C encoder are in pg_bulk_ingest/_pgsend.h). -1 where that is not sure. */

/* A field's length word and `n` bytes of room: where they go, or NULL (no memory). */
static char *out_field(Out *out, size_t n) {
    if (out_reserve(out, 4 + n) < 0) return NULL;
    char *at = out->data + out->len;
    set_u32(at, (uint32_t)n);
    out->len += 4 + n;
    return at + 4;
}

static int put_int64_field(Out *out, int64_t value) {
    char *at = out_field(out, 8);
    if (at == NULL) return -1;
    set_u64(at, (uint64_t)value);
    return 0;
}

/* Text of a field written after a length word patched once it is known: the field's start. */
static size_t open_field(Out *out) {
    size_t start = out->len;
    return out_put(out, "\0\0\0\0", 4) < 0 ? (size_t)-1 : start;
}

static void close_field(Out *out, size_t start) {
    set_u32(out->data + start, (uint32_t)(out->len - start - 4));
}

static int put_integer_field(Out *out, const Column *column, const unsigned char *p, Py_ssize_t n) {
    if (integral_number(p, n) != 1 || !integer_in(p, n, column->a, column->b)) return -1;
    unsigned long long magnitude = magnitude_of(p, n);
    int64_t value = p[0] == '-' ? (int64_t)(0 - magnitude) : (int64_t)magnitude;
    char *at;
    if (column->b == INT16_MAX) {
        if ((at = out_field(out, 2)) == NULL) return -1;
        set_u16(at, (uint16_t)(int16_t)value);
    } else if (column->b == INT32_MAX) {
        if ((at = out_field(out, 4)) == NULL) return -1;
        set_u32(at, (uint32_t)(int32_t)value);
    } else {
        return put_int64_field(out, value);
    }
    return 0;
}

/* Plain decimal text that fits the column (decimal_shape) as NUMERIC's send format. */
static int put_numeric_field(Out *out, const Column *column, const unsigned char *p,
                             Py_ssize_t n) {
    DecimalText number;
    if (decimal_text((const char *)p, n, &number) < 0) return -1;
    /* NUMERIC(p, s) holds s fraction digits: the general path's Decimal is quantized to them. */
    long scale = column->binary >= 0 ? (long)column->binary : number.scale;
    if (scale < number.scale || scale > NUMERIC_DSCALE_MAX) return -1;
    uint16_t stack[128], *digits = stack;
    Py_ssize_t room = numeric_room(&number, scale);
    if (room > 128 && (digits = PyMem_Malloc((size_t)room * sizeof *digits)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    long weight;
    Py_ssize_t ndigits = numeric_digits((const char *)p, n, &number, scale, digits, &weight);
    int result = -1;
    char *at;
    if (weight <= NUMERIC_WEIGHT_MAX && ndigits <= INT16_MAX &&
        (at = out_field(out, 8 + 2 * (size_t)ndigits)) != NULL) {
        set_u16(at, (uint16_t)ndigits);
        set_u16(at + 2, (uint16_t)(int16_t)weight);
        set_u16(at + 4, number.negative && ndigits ? NUMERIC_NEG : NUMERIC_POS);
        set_u16(at + 6, (uint16_t)scale);
        for (Py_ssize_t i = 0; i < ndigits; i++) set_u16(at + 8 + 2 * i, digits[i]);
        result = 0;
    }
    if (digits != stack) PyMem_Free(digits);
    return result;
}

static int numbers_as_written(const unsigned char *p, const unsigned char *end);

/* How deep, and how many keys an object, `canonical_json` follows before it is not sure. */
#define CANONICAL_DEPTH 32
#define CANONICAL_KEYS 32

/* A JSON value (validated) copied where it is already the text orjson writes of what it
 * reads: no whitespace, strings whose escapes are orjson's own, integers of at most 18 digits
 * but -0, no repeated key in an object. 1 when written, 0 when not sure (part of it may be
 * written), -1 without memory. Most jsonb values are so, and skip orjson (put_jsonb_field). */
static int canonical_json(Out *out, Reader *r, int depth) {
    const unsigned char *start = r->p, *p = r->p;
    int found;
    switch (*p) {
    case '"':
        for (p++; *p != '"'; p++) {
            if (*p == '\\') {
                if (!strchr("\"\\bfnrt", p[1]) || p[1] == '\0') return 0; /* \/, \u: not orjson's */
                p++;
            }
        }
        r->p = p + 1;
        return out_put(out, start, (size_t)(r->p - start)) < 0 ? -1 : 1;
    case 't':
    case 'n':
        r->p += 4;
        return out_put(out, start, 4) < 0 ? -1 : 1;
    case 'f':
        r->p += 5;
        return out_put(out, start, 5) < 0 ? -1 : 1;
    case '{':
    case '[': {
        unsigned char close = *p == '{' ? '}' : ']';
        Span keys[CANONICAL_KEYS];
        int count = 0, first = 1;
        if (depth >= CANONICAL_DEPTH) return 0;
        if (out_put(out, p, 1) < 0) return -1;
        r->p++;
        skip_ws(r);
        while (*r->p != close) {
            if (!first) {
                r->p++; /* the comma */
                skip_ws(r);
                if (out_put(out, ",", 1) < 0) return -1;
            }
            if (close == '}') {
                const unsigned char *key = r->p;
                if (count == CANONICAL_KEYS || (found = canonical_json(out, r, depth + 1)) != 1)
                    return count == CANONICAL_KEYS ? 0 : found;
                for (int i = 0; i < count; i++)
                    if (keys[i].end - keys[i].start == r->p - key &&
                        memcmp(keys[i].start, key, (size_t)(r->p - key)) == 0)
                        return 0; /* a repeated key: orjson keeps the last value */
                keys[count].start = key;
                keys[count++].end = r->p;
                skip_ws(r);
                r->p++; /* the colon */
                skip_ws(r);
                if (out_put(out, ":", 1) < 0) return -1;
            }
            first = 0;
            if ((found = canonical_json(out, r, depth + 1)) != 1) return found;
            skip_ws(r);
        }
        r->p++;
        return out_put(out, &close, 1) < 0 ? -1 : 1;
    }
    default: /* a number */
        if (*p == '-') p++;
        while (*p >= '0' && *p <= '9') p++;
        if (*p == '.' || *p == 'e' || *p == 'E' || p - start > 18) return 0; /* orjson's float */
        if (p - start == 2 && start[0] == '-' && start[1] == '0') return 0; /* 0 in Python */
        r->p = p;
        return out_put(out, start, (size_t)(p - start)) < 0 ? -1 : 1;
    }
}

/* jsonb: version 1, then the text orjson writes of the value orjson reads, as the general path
 * has it. Only where every number of `exact` (the whole JSON message: else that path reads it
 * again with exact numbers, Decimals written by their str(); none of it where reading it found
 * only integers of at most 18 digits, which always read as written), or of the value itself
 * when `exact.start` is NULL (an Avro value's JSON, whose decimals are Decimals), reads as
 * written. */
static int put_jsonb_field(Out *out, const Line *self, Span exact, const unsigned char *p,
                           const unsigned char *end) {
    if (exact.start == NULL) exact = (Span){p, end};
    if (!numbers_as_written(exact.start, exact.end)) return -1;
    size_t start = out->len;
    Reader reader = {p, end};
    if (out_reserve(out, 5) < 0) return -1;
    out->data[start + 4] = 1; /* jsonb's format version */
    out->len += 5;
    int copied = canonical_json(out, &reader, 0);
    if (copied < 0) return -1;
    if (copied == 1) { /* (no \u0000 in it: no \u escape is copied) */
        close_field(out, start);
        return 0;
    }
    out->len = start; /* orjson then */
    PyObject *view = PyMemoryView_FromMemory((char *)p, end - p, PyBUF_READ);
    if (view == NULL) return -1;
    PyObject *value = PyObject_CallOneArg(self->loads, view);
    Py_DECREF(view);
    PyObject *data = value == NULL ? NULL : PyObject_CallOneArg(self->dumps, value);
    Py_XDECREF(value);
    if (data == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_MemoryError)) PyErr_Clear(); /* not sure */
        return -1;
    }
    int result = -1;
    const char *bytes = PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    char *at;
    /* jsonb cannot hold NUL: the general path says so */
    if (!(memchr(bytes, '\\', (size_t)size) && strstr(bytes, "\\u0000")) &&
        (at = out_field(out, (size_t)size + 1)) != NULL) {
        at[0] = 1; /* jsonb's format version */
        memcpy(at + 1, bytes, (size_t)size);
        result = 0;
    }
    Py_DECREF(data);
    return result;
}

/* The earliest and the latest instant of Python's datetime, in microseconds from 2000-01-01:
 * where the general path refuses one beyond them, with the error that says so. */
#define FIRST_INSTANT ((int64_t)(1 - PG_EPOCH_ORDINAL) * USECS_PER_DAY)
#define LAST_INSTANT ((int64_t)(3652059 + 1 - PG_EPOCH_ORDINAL) * USECS_PER_DAY - 1)

/* A sure date and time (sure_clock, `at` characters) in microseconds from 2000-01-01, its
 * offset left aside. */
static int64_t clock_microseconds(const unsigned char *p, Py_ssize_t at) {
    int64_t days = ordinal(two(p) * 100 + two(p + 2), two(p + 5), two(p + 8)) - PG_EPOCH_ORDINAL;
    int64_t seconds = (two(p + 11) * 60 + two(p + 14)) * 60 + two(p + 17);
    int64_t micro = 0;
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 20; i < at; i++, k++) micro = micro * 10 + (p[i] - '0');
    for (; k < 6; k++) micro *= 10;
    return days * USECS_PER_DAY + seconds * 1000000 + micro;
}

/* A sure offset (sure_offset) in microseconds east of UTC. */
static int64_t offset_microseconds(const unsigned char *p, Py_ssize_t n) {
    if (n == 1) return 0; /* Z */
    int minutes = two(p + 1) * 60 + (n == 5 ? two(p + 3) : n == 6 ? two(p + 4) : 0);
    return (p[0] == '-' ? -minutes : minutes) * USECS_PER_MINUTE;
}

static int put_uuid_field(Out *out, const unsigned char *p) {
    char *at = out_field(out, 16);
    if (at == NULL) return -1;
    for (int i = 0, j = 0; i < 36; i++) {
        if (p[i] == '-') continue;
        unsigned c = p[i];
        unsigned v = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
        if (j % 2 == 0) at[j / 2] = (char)(v << 4);
        else at[j / 2] = (char)(at[j / 2] | (char)v);
        j++;
    }
    return 0;
}

/* A JSON array of strings without escapes as a one-dimensional array of `oid` elements, lower
 * bound 1, or an empty array. */
static int put_text_array_field(Out *out, const Column *column, const unsigned char *p,
                                const unsigned char *end) {
    Reader r = {p + 1, end};
    size_t start = open_field(out);
    if (start == (size_t)-1 || out_reserve(out, 20) < 0) return -1;
    char *head = out->data + out->len;
    set_u32(head + 4, 0); /* no NULL */
    set_u32(head + 8, (uint32_t)column->binary);
    skip_ws(&r);
    if (r.p < r.end && *r.p == ']') {
        set_u32(head, 0); /* no dimension */
        out->len += 12;
        close_field(out, start);
        return 0;
    }
    set_u32(head, 1);
    set_u32(head + 16, 1); /* the lower bound */
    size_t count_at = out->len + 12;
    out->len += 20;
    uint32_t count = 0;
    for (;;) {
        int escaped;
        const unsigned char *item = r.p;
        if (r.p >= r.end || *r.p != '"' || scan_string(&r, &escaped) < 0 || escaped) return -1;
        char *at = out_field(out, (size_t)(r.p - item - 2));
        if (at == NULL) return -1;
        memcpy(at, item + 1, (size_t)(r.p - item - 2));
        count++;
        skip_ws(&r);
        if (*r.p == ']') break;
        r.p++; /* the comma */
        skip_ws(&r);
    }
    set_u32(out->data + count_at, count);
    close_field(out, start);
    return 0;
}

/* One column's binary COPY field (`exact`: see put_jsonb_field): 0, or -1 to take the
 * fallback. */
static int put_field(Out *out, const Line *self, Span exact, const Column *column, Span span) {
    const unsigned char *p = span.start, *text;
    Py_ssize_t n = span.end - span.start, k, at;
    long long chars;
    if (p == NULL || *p == 'n') {
        if (column->required || out_reserve(out, 4) < 0) return -1;
        set_u32(out->data + out->len, UINT32_MAX); /* NULL */
        out->len += 4;
        return 0;
    }
    switch ((enum kind)column->kind) {
    case K_NONE:
    case K_END:
        break;
    case K_INT:
        return put_integer_field(out, column, p, n);
    case K_TEXT: {
        if (*p != '"') return -1;
        size_t start = open_field(out);
        if (start == (size_t)-1 || put_string(out, p + 1, span.end - 1, &chars) < 0) return -1;
        if (column->a >= 0 && chars > column->a) return -1;
        close_field(out, start);
        return 0;
    }
    case K_NUMERIC:
        text = plain_string(span, &k);
        if (text == NULL) {
            if (integral_number(p, n) < 0 || (n == 2 && p[0] == '-' && p[1] == '0')) return -1;
            text = p, k = n; /* a number token: "0" in Python */
        }
        if (!decimal_shape(text, k, column->a, column->b)) return -1;
        return put_numeric_field(out, column, text, k);
    case K_FLOAT: {
        double value;
        char *field;
        /* REAL never goes binary (see pg_bulk_ingest._binary); an int is not a float. */
        if (column->a || integral_number(p, n) != 0 || finite_double(p, span.end, &value) < 0)
            return -1;
        if ((field = out_field(out, 8)) == NULL) return -1;
        uint64_t bits;
        memcpy(&bits, &value, sizeof bits);
        set_u64(field, bits);
        return 0;
    }
    case K_BOOL: {
        if (*p != 't' && *p != 'f') return -1;
        char *field = out_field(out, 1);
        if (field == NULL) return -1;
        *field = *p == 't';
        return 0;
    }
    case K_JSONB:
        return put_jsonb_field(out, self, exact, p, span.end);
    case K_TIMESTAMPTZ:
    case K_TIMESTAMP: {
        text = plain_string(span, &k);
        if (text == NULL || (at = sure_clock(text, k)) == 0) return -1;
        int64_t moment = clock_microseconds(text, at);
        if (column->kind == K_TIMESTAMPTZ) {
            if (!sure_offset(text + at, k - at)) return -1;
            if (at < k) moment -= offset_microseconds(text + at, k - at);
        } else if (!utc_offset(text + at, k - at)) {
            return -1;
        }
        if (moment < FIRST_INSTANT || moment > LAST_INSTANT) return -1;
        return put_int64_field(out, moment);
    }
    case K_DATE: {
        char *field;
        text = plain_string(span, &k);
        if (text == NULL || k != 10 || !sure_day(text, k)) return -1;
        long days = ordinal(two(text) * 100 + two(text + 2), two(text + 5), two(text + 8));
        if ((field = out_field(out, 4)) == NULL) return -1;
        set_u32(field, (uint32_t)(int32_t)(days - PG_EPOCH_ORDINAL));
        return 0;
    }
    case K_UUID:
        text = plain_string(span, &k);
        if (text == NULL || !uuid_shape(text, k)) return -1;
        return put_uuid_field(out, text);
    case K_TEXT_ARRAY:
        if (*p != '[') return -1;
        return put_text_array_field(out, column, p, span.end);
    }
    return -1;
}

/* ---- the row ---- */

/* The spans of the columns' fields in a top-level object; -1 when the document is not a
 * non-empty object, is not valid, or has a key with an escape (it could spell a field). */
static int read_fields(const Line *self, const unsigned char *p, Py_ssize_t n, Span *spans,
                       int *inexact) {
    Reader r = {p, p + n, 0};
    int escaped;
    skip_ws(&r);
    if (r.p >= r.end || *r.p != '{') return -1;
    r.p++;
    skip_ws(&r);
    if (r.p >= r.end || *r.p == '}') return -1;
    for (;;) {
        const unsigned char *key = r.p + 1;
        if (r.p >= r.end || *r.p != '"' || scan_string(&r, &escaped) < 0 || escaped) return -1;
        Py_ssize_t key_len = r.p - 1 - key;
        skip_ws(&r);
        if (r.p >= r.end || *r.p != ':') return -1;
        r.p++;
        skip_ws(&r);
        const unsigned char *start = r.p;
        if (scan_value(&r, 1) < 0) return -1;
        for (Py_ssize_t i = 0; i < self->count; i++) {
            const Column *column = &self->columns[i];
            if (column->name_len == key_len && (key_len == 0 || column->name[0] == (char)*key) &&
                memcmp(column->name, key, (size_t)key_len) == 0) {
                spans[i].start = start; /* a repeated key: the last one counts, as in orjson */
                spans[i].end = r.p;
            }
        }
        skip_ws(&r);
        if (r.p >= r.end) return -1;
        if (*r.p == ',') {
            r.p++;
            skip_ws(&r);
            continue;
        }
        if (*r.p != '}') return -1;
        r.p++;
        skip_ws(&r);
        *inexact = r.inexact;
        return r.p == r.end ? 0 : -1;
    }
}

/* What `type(bytes)` gives for a subclass of bytes, without the bytes object between and
 * the call's look-up of __bytes__ (a tenth of a row's time): its storage holds the data and
 * the NUL after it, and no hash yet. */
static PyObject *new_tuple(PyTypeObject *type, const char *data, Py_ssize_t n) {
    PyObject *row = type->tp_alloc(type, n);
    if (row == NULL) return NULL;
    memcpy(PyBytes_AS_STRING(row), data, (size_t)n);
    PyBytes_AS_STRING(row)[n] = '\0';
    _Py_COMP_DIAG_PUSH
    _Py_COMP_DIAG_IGNORE_DEPR_DECLS
    ((PyBytesObject *)row)->ob_shash = -1;
    _Py_COMP_DIAG_POP
    return row;
}

static int key_ok(const Line *self, PyObject *key) {
    if (key == Py_None || self->key_format == KEY_BYTES) return 1;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(key);
    Py_ssize_t n = PyBytes_GET_SIZE(key);
    if (self->key_format == KEY_TEXT) return valid_utf8(p, n) == 0;
    return valid_document(p, n) == 0;
}

#define MAX_COLUMNS 64

/* The row of a value's JSON bytes: 1 with *row set, 0 when not sure (the fallback's turn), -1
 * with an exception (no memory). `message`: the bytes are the message's own (JSON), not an
 * Avro value's JSON (see put_jsonb_field). */
static int line_of(Line *self, PyObject *key, const unsigned char *p, Py_ssize_t n, int message,
                   PyObject **row) {
    Span spans[MAX_COLUMNS];
    memset(spans, 0, sizeof(Span) * (size_t)self->count);
    Out out;
    out.data = out.local;
    out.len = 0;
    out.cap = sizeof out.local;
    out.raw = self->binary;
    int inexact;
    if (!key_ok(self, key) || read_fields(self, p, n, spans, &inexact) < 0) goto not_sure;
    if (self->binary) {
        /* The numbers put_jsonb_field checks: none where every one read is a short integer. */
        Span exact = {message ? p : NULL, message ? p + (inexact ? n : 0) : NULL};
        set_u16(out.data, (uint16_t)self->count); /* the field count */
        out.len = 2;
        for (Py_ssize_t i = 0; i < self->count; i++)
            if (put_field(&out, self, exact, &self->columns[i], spans[i]) < 0) goto not_sure;
        if (self->bytes_rows) {
            *row = new_tuple((PyTypeObject *)self->row_type, out.data, (Py_ssize_t)out.len);
            out_free(&out);
            return *row == NULL ? -1 : 1;
        }
        PyObject *data = PyBytes_FromStringAndSize(out.data, (Py_ssize_t)out.len);
        out_free(&out);
        if (data == NULL) return -1;
        *row = PyObject_CallOneArg(self->row_type, data);
        Py_DECREF(data);
        return *row == NULL ? -1 : 1;
    }
    for (Py_ssize_t i = 0; i < self->count; i++) {
        if (i > 0 && out_put(&out, "\t", 1) < 0) goto not_sure;
        if (put_column(&out, &self->columns[i], spans[i]) < 0) goto not_sure;
    }
    if (out_put(&out, "\n", 1) < 0) goto not_sure;
    PyObject *text = PyUnicode_DecodeUTF8(out.data, (Py_ssize_t)out.len, NULL);
    out_free(&out);
    if (text == NULL) return -1; /* no memory: the text was checked to be UTF-8 */
    *row = PyObject_CallOneArg(self->row_type, text);
    Py_DECREF(text);
    return *row == NULL ? -1 : 1;
not_sure:
    out_free(&out);
    return PyErr_Occurred() ? -1 : 0; /* no memory, or not sure */
}

static PyObject *Line_row(Line *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "row(key, value) takes two arguments");
        return NULL;
    }
    PyObject *key = args[0], *value = args[1], *row = NULL;
    if (self->fallback == NULL || self->row_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the line was cleared");
        return NULL;
    }
    if (value == Py_None) Py_RETURN_NONE; /* a tombstone */
    if (!PyBytes_CheckExact(value) || (key != Py_None && !PyBytes_CheckExact(key)))
        return PyObject_Vectorcall(self->fallback, args, 2, NULL);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(value);
    int found = line_of(self, key, p, PyBytes_GET_SIZE(value), 1, &row);
    if (found != 0) return row; /* the row, or NULL with the exception */
    return PyObject_Vectorcall(self->fallback, args, 2, NULL);
}

#include "_avroline.h"

/* ---- exact numbers ---- */

/* Whether orjson reads an integer token as an int (from -2**63 to 2**64 - 1), not a float. */
static int int_round_trips(const unsigned char *p, Py_ssize_t n) {
    int negative = p[0] == '-';
    Py_ssize_t k = n - negative;
    if (k <= 18) return 1;
    const char *limit = negative ? "9223372036854775808" : "18446744073709551615";
    Py_ssize_t m = (Py_ssize_t)strlen(limit);
    if (k != m) return k < m;
    return memcmp(p + negative, limit, (size_t)m) <= 0;
}

/* Whether the float orjson reads from a number token with a fraction or an exponent is written
 * by Python's repr() as the token itself. By its shape alone when it has no exponent, at most
 * 15 digits (a double keeps 15), no trailing zero in its fraction but ".0", and no four zeros
 * after "0." (repr() writes below 1e-4 with an exponent); else by reading and writing it. */
static int float_round_trips(const unsigned char *p, const unsigned char *end) {
    const unsigned char *s = p + (*p == '-'), *q = s, *fraction = NULL;
    while (q < end && *q >= '0' && *q <= '9') q++;
    Py_ssize_t whole = q - s, places = 0;
    if (q < end && *q == '.') {
        fraction = ++q;
        while (q < end && *q >= '0' && *q <= '9') q++;
        places = q - fraction;
    }
    if (q == end && places > 0 && whole + places <= 15 &&
        (places == 1 || fraction[places - 1] != '0') &&
        !(whole == 1 && *s == '0' && places >= 4 && memcmp(fraction, "0000", 4) == 0))
        return 1;
    double value;
    if (finite_double(p, end, &value) < 0) return 0;
    char *text = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!text) {
        PyErr_Clear();
        return 0;
    }
    size_t n = strlen(text);
    int same = n == (size_t)(end - p) && memcmp(text, p, n) == 0;
    PyMem_Free(text);
    return same;
}

/* Past the string whose opening quote is at `p`: its closing quote, the first one not escaped
 * by an odd run of backslashes, found with memchr (most of a document is strings). */
static const unsigned char *past_string(const unsigned char *p, const unsigned char *end) {
    const unsigned char *q = p + 1;
    for (;;) {
        q = memchr(q, '"', (size_t)(end - q));
        if (q == NULL) return end;
        const unsigned char *b = q;
        while (b > p + 1 && b[-1] == '\\') b--;
        if (((q - b) & 1) == 0) return q + 1;
        q++;
    }
}

/* numbers_round_trip(document): False when a number in the JSON document (not in a string)
 * reads through orjson as a value whose Python text is not the number as written; then
 * sink.mapping reads that document again with exact numbers. */
static int numbers_as_written(const unsigned char *p, const unsigned char *end) {
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') {
            p = past_string(p, end);
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            const unsigned char *q = p + 1;
            int integral = 1;
            for (; q < end; q++) {
                unsigned char d = *q;
                if (d == '.' || d == 'e' || d == 'E') integral = 0;
                else if (!(d >= '0' && d <= '9') && d != '+' && d != '-') break;
            }
            if (integral ? !int_round_trips(p, q - p) : !float_round_trips(p, q)) return 0;
            p = q;
        } else {
            p++;
        }
    }
    return 1;
}

static PyObject *numbers_round_trip(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "numbers_round_trip() takes bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(arg);
    return PyBool_FromLong(numbers_as_written(p, p + PyBytes_GET_SIZE(arg)));
}

/* Whether a JSON value (as orjson makes it: dict, list, str, int, float, bool, None) is or
 * holds a float; -1 with an exception past Python's recursion limit. */
static int holds_float_in(PyObject *value) {
    if (PyFloat_CheckExact(value)) return 1;
    int dict = PyDict_CheckExact(value);
    if (!dict && !PyList_CheckExact(value)) return 0;
    if (Py_EnterRecursiveCall(" in holds_float")) return -1;
    int found = 0;
    Py_ssize_t position = 0, i = 0;
    PyObject *key, *item;
    while (found == 0) {
        if (dict) {
            if (!PyDict_Next(value, &position, &key, &item)) break;
        } else {
            if (i >= PyList_GET_SIZE(value)) break;
            item = PyList_GET_ITEM(value, i++);
        }
        if (PyFloat_CheckExact(item)) found = 1;
        else if (PyDict_CheckExact(item) || PyList_CheckExact(item)) found = holds_float_in(item);
    }
    Py_LeaveRecursiveCall();
    return found;
}

/* holds_float(value): the Python form is sink.copytext._python_holds_float. */
static PyObject *holds_float(PyObject *module, PyObject *value) {
    (void)module;
    int found = holds_float_in(value);
    if (found < 0) return NULL;
    return PyBool_FromLong(found);
}

/* ---- the type ---- */

/* The fallback is usually a bound method of the object that holds this line: a cycle, which
 * the garbage collector can only break through these two. */
static int Line_traverse(Line *self, visitproc visit, void *arg) {
    Py_VISIT(self->row_type);
    Py_VISIT(self->fallback);
    Py_VISIT(self->loads);
    Py_VISIT(self->dumps);
    return 0;
}

static int Line_clear(Line *self) {
    Py_CLEAR(self->row_type);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->loads);
    Py_CLEAR(self->dumps);
    return 0;
}

static void Line_dealloc(Line *self) {
    PyObject_GC_UnTrack(self);
    Line_clear(self);
    for (Py_ssize_t i = 0; i < self->count; i++) PyMem_Free(self->columns[i].name);
    PyMem_Free(self->columns);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Line_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"columns", "row_type", "fallback", "key_format", "binary", NULL};
    PyObject *columns, *row_type, *fallback, *binary = Py_None;
    int key_format;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOi|O", names, &columns, &row_type,
                                     &fallback, &key_format, &binary))
        return NULL;
    PyObject *seq = PySequence_Fast(columns, "columns must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject *extras = binary == Py_None ? NULL : PySequence_Fast(binary, "binary: a sequence");
    if (binary != Py_None && extras == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    if (count < 1 || count > MAX_COLUMNS || key_format < KEY_BYTES || key_format > KEY_JSON ||
        (extras != NULL && PySequence_Fast_GET_SIZE(extras) != count)) {
        Py_DECREF(seq);
        Py_XDECREF(extras);
        PyErr_SetString(PyExc_ValueError,
                        "1 to 64 columns (and as many binary parameters), and a key format of "
                        "0, 1 or 2");
        return NULL;
    }
    Line *self = (Line *)type->tp_alloc(type, 0);
    if (self == NULL) goto fail;
    self->columns = PyMem_Calloc((size_t)count, sizeof(Column));
    if (self->columns == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Column *column = &self->columns[i];
        const char *name;
        Py_ssize_t name_len;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "s#iLLp", &name, &name_len,
                              &column->kind, &column->a, &column->b, &column->required))
            goto fail;
        if (column->kind <= K_NONE || column->kind >= K_END) {
            PyErr_Format(PyExc_ValueError, "column %zd: unknown kind %d", i, column->kind);
            goto fail;
        }
        if (extras != NULL) {
            column->binary = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(extras, i));
            if (column->binary == -1 && PyErr_Occurred()) goto fail;
        }
        column->name = PyMem_Malloc((size_t)name_len + 1);
        if (column->name == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(column->name, name, (size_t)name_len + 1);
        column->name_len = name_len;
        self->count = i + 1;
    }
    if (extras != NULL) {
        /* jsonb fields are the text orjson writes of what it reads (see put_jsonb_field) */
        PyObject *orjson = PyImport_ImportModule("orjson");
        if (orjson == NULL) goto fail;
        self->loads = PyObject_GetAttrString(orjson, "loads");
        self->dumps = PyObject_GetAttrString(orjson, "dumps");
        Py_DECREF(orjson);
        if (self->loads == NULL || self->dumps == NULL) goto fail;
        self->binary = 1;
    }
    Py_DECREF(seq);
    Py_XDECREF(extras);
    Py_INCREF(row_type);
    self->row_type = row_type;
    self->bytes_rows =
        PyType_Check(row_type) && PyType_IsSubtype((PyTypeObject *)row_type, &PyBytes_Type);
    Py_INCREF(fallback);
    self->fallback = fallback;
    self->key_format = key_format;
    return (PyObject *)self;
fail:
    Py_DECREF(seq);
    Py_XDECREF(extras);
    Py_XDECREF(self);
    return NULL;
}

static PyMethodDef Line_methods[] = {
    {"row", (PyCFunction)(void (*)(void))Line_row, METH_FASTCALL,
     "row(key, value): the message's row, or what fallback(key, value) gives."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sink._copyline.Line",
    .tp_basicsize = sizeof(Line),
    .tp_dealloc = (destructor)Line_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Line_traverse,
    .tp_clear = (inquiry)Line_clear,
    .tp_doc = "One table's COPY line from a JSON object value, in C.",
    .tp_methods = Line_methods,
    .tp_new = Line_new,
};

static PyMethodDef module_methods[] = {
    {"holds_float", holds_float, METH_O,
     "holds_float(value): whether a JSON value (dict, list, str, ...) is or holds a float."},
    {"numbers_round_trip", numbers_round_trip, METH_O,
     "numbers_round_trip(document): whether every number in the JSON document is, through "
     "orjson, a value whose Python text is the number as written."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sink._copyline",
    .m_doc = "JSON message to COPY line, in C.",
    .m_size = -1,
    .m_methods = module_methods,
};

/* KINDS: each kind's name and number, as `enum kind` has them. */
#define KIND_NAME(name) #name,
static const char *const kind_names[] = {KIND_LIST(KIND_NAME)};
#undef KIND_NAME

static PyObject *kinds_dict(void) {
    PyObject *kinds = PyDict_New();
    for (int kind = K_NONE + 1; kinds != NULL && kind < K_END; kind++) {
        PyObject *number = PyLong_FromLong(kind);
        if (number == NULL || PyDict_SetItemString(kinds, kind_names[kind - 1], number) < 0)
            Py_CLEAR(kinds);
        Py_XDECREF(number);
    }
    return kinds;
}

PyMODINIT_FUNC PyInit__copyline(void) {
    if (PyType_Ready(&LineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&LineType);
    if (PyModule_AddObject(m, "Line", (PyObject *)&LineType) < 0) {
        Py_DECREF(&LineType);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *kinds = kinds_dict();
    if (kinds == NULL || PyModule_AddObject(m, "KINDS", kinds) < 0) {
        Py_XDECREF(kinds);
        Py_DECREF(m);
        return NULL;
    }
    if (PyType_Ready(&AvroLineType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&AvroLineType);
    if (PyModule_AddObject(m, "AvroLine", (PyObject *)&AvroLineType) < 0) {
        Py_DECREF(&AvroLineType);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *ops = avro_ops_dict();
    if (ops == NULL || PyModule_AddObject(m, "AVRO_OPS", ops) < 0) {
        Py_XDECREF(ops);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
