/* The native form of pg_bulk_ingest/_binary.py's row encoder: one call turns a row of Python
 * values into one binary COPY tuple, bytes for bytes what the Python encoders give.
 *
 * Each column comes with the kind of its values (chosen once per table by _binary.py) and its
 * Python field encoder. The common values of each kind are encoded here; any other value (an
 * int for a NUMERIC, a str for a timestamp, a Decimal in exponent notation, a nested array)
 * goes to the Python encoder, which gives its field or raises as it always has. A value that
 * binary COPY cannot carry raises NotBinary, as the Python encoders do. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_pgsend.h"

/* The column kinds; the numbers are _binary.py's _NATIVE_* constants. */
enum {
    PYTHON = 0, /* every value through the Python encoder */
    INT2 = 1,
    INT4 = 2,
    INT8 = 3,
    FLOAT8 = 4,
    BOOL = 5,
    TEXT = 6,
    DATE = 7,
    TIMESTAMP = 8,
    TIMESTAMPTZ = 9,
    NUMERIC = 10,
    JSONB = 11,
    ARRAY = 12,
};

/* What an encoder below returns besides 0 (done) and -1 (an exception is set): the value is
 * one for the Python encoder. */
#define DEFER 1

/* Room in the row buffer before it moves to the heap: most rows fit. */
#define STACK_BYTES 2048
/* Decimal digits handled without a heap allocation. */
#define STACK_DIGITS 128

typedef struct Column {
    int kind;
    PyObject *encode;        /* the Python field encoder (for an array's element: its own) */
    Py_ssize_t limit;        /* TEXT: the most characters, or -1 */
    int bounded;             /* NUMERIC: has a precision */
    long integer_digits;     /* NUMERIC(p, s): p - s */
    uint32_t oid;            /* ARRAY: the element type's */
    struct Column *element;  /* ARRAY: its element's column */
} Column;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall; /* one call a row: no argument tuple */
    Py_ssize_t width;
    Column *columns;
    PyObject *copy_row;      /* pg_bulk_ingest.CopyRow: never a binary row */
    PyObject *copy_tuple;    /* pg_bulk_ingest.CopyTuple: a binary row already */
    PyObject *not_binary;    /* pg_bulk_ingest._errors.NotBinary */
    PyObject *decimal;       /* decimal.Decimal */
    PyObject *dumps;         /* orjson.dumps */
} RowEncoder;

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
    char stack[STACK_BYTES];
} Buffer;

static int
reserve(Buffer *buffer, Py_ssize_t more)
{
    if (more <= buffer->capacity - buffer->size)
        return 0;
    if (more > PY_SSIZE_T_MAX / 2 - buffer->size) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t capacity = buffer->capacity * 2;
    while (capacity - buffer->size < more)
        capacity *= 2;
    char *data;
    if (buffer->data == buffer->stack) {
        data = PyMem_Malloc((size_t)capacity);
        if (data != NULL)
            memcpy(data, buffer->stack, (size_t)buffer->size);
    } else {
        data = PyMem_Realloc(buffer->data, (size_t)capacity);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

/* Appends a length word and `size` bytes of room; returns where they go, NULL on error. */
static char *
field(Buffer *buffer, Py_ssize_t size)
{
    if (reserve(buffer, 4 + size) < 0)
        return NULL;
    char *at = buffer->data + buffer->size;
    set_u32(at, (uint32_t)size);
    buffer->size += 4 + size;
    return at + 4;
}

static int
put_null(Buffer *buffer)
{
    if (reserve(buffer, 4) < 0)
        return -1;
    set_u32(buffer->data + buffer->size, UINT32_MAX);
    buffer->size += 4;
    return 0;
}

static int
put_int64(Buffer *buffer, int64_t value)
{
    char *at = field(buffer, 8);
    if (at == NULL)
        return -1;
    set_u64(at, (uint64_t)value);
    return 0;
}

static int
refuse(RowEncoder *self)
{
    PyErr_SetNone(self->not_binary);
    return -1;
}

/* The field the column's Python encoder gives for the value. */
static int
put_python(Buffer *buffer, const Column *column, PyObject *value)
{
    PyObject *data = PyObject_CallOneArg(column->encode, value);
    if (data == NULL)
        return -1;
    if (!PyBytes_Check(data)) {
        Py_DECREF(data);
        PyErr_SetString(PyExc_TypeError, "a binary field encoder returned no bytes");
        return -1;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    int failed = reserve(buffer, size);
    if (!failed) {
        memcpy(buffer->data + buffer->size, PyBytes_AS_STRING(data), (size_t)size);
        buffer->size += size;
    }
    Py_DECREF(data);
    return failed ? -1 : 0;
}

static int
put_integer(RowEncoder *self, Buffer *buffer, int kind, PyObject *value)
{
    if (!PyLong_CheckExact(value))
        return DEFER;
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (number == -1 && PyErr_Occurred())
        return -1;
    if (overflow)
        return refuse(self);
    char *at;
    if (kind == INT2) {
        if (number < INT16_MIN || number > INT16_MAX)
            return refuse(self);
        if ((at = field(buffer, 2)) == NULL)
            return -1;
        set_u16(at, (uint16_t)(int16_t)number);
    } else if (kind == INT4) {
        if (number < INT32_MIN || number > INT32_MAX)
            return refuse(self);
        if ((at = field(buffer, 4)) == NULL)
            return -1;
        set_u32(at, (uint32_t)(int32_t)number);
    } else {
        return put_int64(buffer, (int64_t)number);
    }
    return 0;
}

static int
put_float8(Buffer *buffer, PyObject *value)
{
    if (!PyFloat_CheckExact(value))
        return DEFER;
    double number = PyFloat_AS_DOUBLE(value);
    uint64_t bits;
    if (isnan(number)) {
        bits = UINT64_C(0x7ff8000000000000); /* float8in's one NaN */
    } else {
        memcpy(&bits, &number, sizeof bits);
    }
    char *at = field(buffer, 8);
    if (at == NULL)
        return -1;
    set_u64(at, bits);
    return 0;
}

static int
put_bool(Buffer *buffer, PyObject *value)
{
    if (value != Py_True && value != Py_False)
        return DEFER;
    char *at = field(buffer, 1);
    if (at == NULL)
        return -1;
    *at = value == Py_True ? 1 : 0;
    return 0;
}

static int
put_text(RowEncoder *self, Buffer *buffer, const Column *column, PyObject *value)
{
    if (!PyUnicode_CheckExact(value))
        return DEFER;
    if (column->limit >= 0 && PyUnicode_GET_LENGTH(value) > column->limit)
        return refuse(self);
    Py_ssize_t size;
    const char *data = PyUnicode_AsUTF8AndSize(value, &size);
    if (data == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear(); /* a lone surrogate: the Python encoder's error, or NotBinary */
        return DEFER;
    }
    if (size > INT32_MAX || memchr(data, 0, (size_t)size) != NULL)
        return refuse(self);
    char *at = field(buffer, size);
    if (at == NULL)
        return -1;
    memcpy(at, data, (size_t)size);
    return 0;
}

static int
put_date(Buffer *buffer, PyObject *value)
{
    if (!PyDate_CheckExact(value))
        return DEFER;
    long days = ordinal(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                        PyDateTime_GET_DAY(value)) - PG_EPOCH_ORDINAL;
    char *at = field(buffer, 4);
    if (at == NULL)
        return -1;
    set_u32(at, (uint32_t)(int32_t)days);
    return 0;
}

/* Microseconds from 2000-01-01 00:00 of the datetime's own fields, its zone left aside. */
static int64_t
local_microseconds(PyObject *value)
{
    int64_t days = ordinal(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                           PyDateTime_GET_DAY(value)) - PG_EPOCH_ORDINAL;
    int64_t seconds = (PyDateTime_DATE_GET_HOUR(value) * 60 + PyDateTime_DATE_GET_MINUTE(value))
                        * 60 + PyDateTime_DATE_GET_SECOND(value);
    return days * USECS_PER_DAY + seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(value);
}

static PyObject *
zone_of(PyObject *value)
{
    PyDateTime_DateTime *datetime = (PyDateTime_DateTime *)value;
    return datetime->hastzinfo ? datetime->tzinfo : Py_None;
}

static int
put_timestamp(Buffer *buffer, PyObject *value)
{
    if (!PyDateTime_CheckExact(value) || zone_of(value) != Py_None)
        return DEFER; /* an aware one is converted as _binary.py converts it */
    return put_int64(buffer, local_microseconds(value));
}

static int
put_timestamptz(RowEncoder *self, Buffer *buffer, PyObject *value)
{
    if (!PyDateTime_CheckExact(value))
        return DEFER;
    PyObject *zone = zone_of(value);
    int64_t local = local_microseconds(value);
    if (zone == Py_None || zone == PyDateTime_TimeZone_UTC)
        return put_int64(buffer, local); /* naive: taken as UTC */
    PyObject *offset = PyObject_CallMethod(value, "utcoffset", NULL);
    if (offset == NULL)
        return -1;
    if (offset == Py_None) {
        Py_DECREF(offset);
        return refuse(self); /* the session's zone would apply */
    }
    if (!PyDelta_CheckExact(offset)) {
        Py_DECREF(offset);
        return DEFER;
    }
    int64_t shift = PyDateTime_DELTA_GET_DAYS(offset) * USECS_PER_DAY
                    + (int64_t)PyDateTime_DELTA_GET_SECONDS(offset) * 1000000
                    + PyDateTime_DELTA_GET_MICROSECONDS(offset);
    Py_DECREF(offset);
    if (shift % USECS_PER_MINUTE != 0)
        return refuse(self); /* an offset the text's ISO form may not carry exactly */
    return put_int64(buffer, local - shift);
}

/* NUMERIC's send format of a Decimal from its str(), for plain notation ([-]digits[.digits]);
 * exponent notation, NaN and the infinities go to the Python encoder. */
static int
put_numeric(RowEncoder *self, Buffer *buffer, const Column *column, PyObject *value)
{
    if (Py_TYPE(value) != (PyTypeObject *)self->decimal)
        return DEFER;
    PyObject *string = PyObject_Str(value);
    if (string == NULL)
        return -1;
    Py_ssize_t length;
    const char *text = PyUnicode_AsUTF8AndSize(string, &length);
    if (text == NULL) {
        Py_DECREF(string);
        return -1;
    }
    DecimalText number;
    if (decimal_text(text, length, &number) < 0) {
        Py_DECREF(string);
        return DEFER;
    }
    if (column->bounded) {
        /* Decimal.adjusted(); a value that may overflow once rounded is Python's to judge. */
        long adjusted = number.significant ? (long)number.significant - 1 - number.scale
                                           : -number.scale;
        if (adjusted >= column->integer_digits - 1) {
            Py_DECREF(string);
            return DEFER;
        }
    }
    Py_ssize_t room = numeric_room(&number, number.scale);
    uint16_t stack[STACK_DIGITS];
    uint16_t *digits = stack;
    if (room > STACK_DIGITS) {
        digits = PyMem_Malloc((size_t)room * sizeof *digits);
        if (digits == NULL) {
            Py_DECREF(string);
            PyErr_NoMemory();
            return -1;
        }
    }
    long weight;
    Py_ssize_t ndigits = numeric_digits(text, length, &number, number.scale, digits, &weight);
    Py_DECREF(string);
    int result = 0;
    if (weight > NUMERIC_WEIGHT_MAX || number.scale > NUMERIC_DSCALE_MAX || ndigits > INT16_MAX) {
        result = refuse(self); /* numeric_in says how it overflows */
    } else {
        char *at = field(buffer, 8 + 2 * ndigits);
        if (at == NULL) {
            result = -1;
        } else {
            set_u16(at, (uint16_t)ndigits);
            set_u16(at + 2, (uint16_t)(int16_t)weight);
            set_u16(at + 4, number.negative && ndigits ? NUMERIC_NEG : NUMERIC_POS);
            set_u16(at + 6, (uint16_t)number.scale);
            for (Py_ssize_t i = 0; i < ndigits; i++)
                set_u16(at + 8 + 2 * i, digits[i]);
        }
    }
    if (digits != stack)
        PyMem_Free(digits);
    return result;
}

/* Whether JSON text holds \u0000, which jsonb refuses; like _binary.py, also where the
 * backslash is itself escaped (the text path then decides). */
static int
has_nul_escape(const char *text, Py_ssize_t size)
{
    const char *end = text + size, *at = text;
    while ((at = memchr(at, '\\', (size_t)(end - at))) != NULL) {
        if (end - at >= 6 && memcmp(at, "\\u0000", 6) == 0)
            return 1;
        at++;
    }
    return 0;
}

static int
put_jsonb(RowEncoder *self, Buffer *buffer, PyObject *value)
{
    PyObject *data = PyObject_CallOneArg(self->dumps, value);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear(); /* a Decimal, a big integer: _binary.py's exact digits */
            return DEFER;
        }
        return -1;
    }
    if (!PyBytes_Check(data)) {
        Py_DECREF(data);
        return DEFER;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    const char *bytes = PyBytes_AS_STRING(data);
    int result = 0;
    if (size >= INT32_MAX
        || has_nul_escape(bytes, size)) {
        result = refuse(self); /* jsonb cannot hold NUL: the text path says so */
    } else {
        char *at = field(buffer, size + 1);
        if (at == NULL) {
            result = -1;
        } else {
            at[0] = 1; /* jsonb's format version */
            memcpy(at + 1, bytes, (size_t)size);
        }
    }
    Py_DECREF(data);
    return result;
}

static int put_value(RowEncoder *self, Buffer *buffer, const Column *column, PyObject *value);

/* A one-dimensional array; one of lists (or a value the Python encoder refuses) is its. */
static int
put_array(RowEncoder *self, Buffer *buffer, const Column *column, PyObject *value)
{
    if (!PyList_CheckExact(value) && !PyTuple_CheckExact(value))
        return DEFER;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(value);
    if (count > 0) {
        PyObject *head = PySequence_Fast_GET_ITEM(value, 0);
        if (PyList_Check(head) || PyTuple_Check(head))
            return DEFER;
    }
    if (count > INT32_MAX)
        return refuse(self);
    Py_ssize_t start = buffer->size;
    char *at = field(buffer, count ? 20 : 12);
    if (at == NULL)
        return -1;
    set_u32(at, count ? 1 : 0);
    set_u32(at + 8, column->oid);
    if (count == 0) {
        set_u32(at + 4, 0);
        return 0;
    }
    set_u32(at + 12, (uint32_t)count);
    set_u32(at + 16, 1); /* the lower bound */
    int nulls = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        /* The list may change under a Python encoder: read it afresh each time. */
        if (i >= PySequence_Fast_GET_SIZE(value))
            return DEFER;
        PyObject *item = PySequence_Fast_GET_ITEM(value, i);
        nulls |= item == Py_None;
        Py_INCREF(item); /* held while a Python encoder might change the list */
        int failed = put_value(self, buffer, column->element, item) < 0;
        Py_DECREF(item);
        if (failed)
            return -1;
    }
    if (PySequence_Fast_GET_SIZE(value) != count)
        return DEFER;
    Py_ssize_t size = buffer->size - start - 4;
    if (size > INT32_MAX)
        return refuse(self);
    set_u32(buffer->data + start, (uint32_t)size);
    set_u32(buffer->data + start + 8, (uint32_t)nulls);
    return 0;
}

/* Appends the column's field for the value: NULL for None, the native encoding when there is
 * one for the value, the Python encoder's field otherwise. */
static int
put_value(RowEncoder *self, Buffer *buffer, const Column *column, PyObject *value)
{
    if (value == Py_None)
        return put_null(buffer);
    int result;
    Py_ssize_t start = buffer->size;
    switch (column->kind) {
    case INT2:
    case INT4:
    case INT8:
        result = put_integer(self, buffer, column->kind, value);
        break;
    case FLOAT8:
        result = put_float8(buffer, value);
        break;
    case BOOL:
        result = put_bool(buffer, value);
        break;
    case TEXT:
        result = put_text(self, buffer, column, value);
        break;
    case DATE:
        result = put_date(buffer, value);
        break;
    case TIMESTAMP:
        result = put_timestamp(buffer, value);
        break;
    case TIMESTAMPTZ:
        result = put_timestamptz(self, buffer, value);
        break;
    case NUMERIC:
        result = put_numeric(self, buffer, column, value);
        break;
    case JSONB:
        result = put_jsonb(self, buffer, value);
        break;
    case ARRAY:
        result = put_array(self, buffer, column, value);
        break;
    default:
        result = DEFER;
    }
    if (result != DEFER)
        return result;
    buffer->size = start; /* whatever a deferred array began */
    return put_python(buffer, column, value);
}

static void
free_columns(Column *columns, Py_ssize_t count)
{
    if (columns == NULL)
        return;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_XDECREF(columns[i].encode);
        if (columns[i].element != NULL) {
            free_columns(columns[i].element, 1);
            PyMem_Free(columns[i].element);
        }
    }
}

/* (kind, encode, limit, integer_digits or None, oid, element spec or None) */
static int
read_column(Column *column, PyObject *spec, int nested)
{
    int kind;
    PyObject *encode, *integer_digits, *element;
    Py_ssize_t limit;
    unsigned int oid;
    if (!PyArg_ParseTuple(spec, "iOnOIO;a column spec", &kind, &encode, &limit, &integer_digits,
                          &oid, &element))
        return -1;
    if (kind < PYTHON || kind > ARRAY || (kind == ARRAY && (nested || element == Py_None))) {
        PyErr_SetString(PyExc_ValueError, "a column spec of no known kind");
        return -1;
    }
    if (!PyCallable_Check(encode)) {
        PyErr_SetString(PyExc_TypeError, "a column's encoder is not callable");
        return -1;
    }
    column->kind = kind;
    Py_INCREF(encode);
    column->encode = encode;
    column->limit = limit;
    column->bounded = integer_digits != Py_None;
    column->integer_digits = column->bounded ? PyLong_AsLong(integer_digits) : 0;
    if (column->integer_digits == -1 && PyErr_Occurred())
        return -1;
    column->oid = oid;
    if (kind == ARRAY) {
        column->element = PyMem_Calloc(1, sizeof(Column));
        if (column->element == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        return read_column(column->element, element, 1);
    }
    return 0;
}

static PyObject *RowEncoder_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                       PyObject *kwnames);

static PyObject *
RowEncoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *specs, *copy_row, *copy_tuple, *not_binary, *decimal, *dumps;
    static char *keywords[] = {"columns", "copy_row",  "copy_tuple", "not_binary",
                               "decimal", "dumps",     NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO:RowEncoder", keywords, &specs,
                                     &copy_row, &copy_tuple, &not_binary, &decimal, &dumps))
        return NULL;
    if (!PyType_Check(copy_row) || !PyType_Check(copy_tuple) || !PyType_Check(decimal)
        || !PyExceptionClass_Check(not_binary) || !PyCallable_Check(dumps)) {
        PyErr_SetString(PyExc_TypeError,
                        "RowEncoder takes three types, an exception, a callable");
        return NULL;
    }
    PyObject *list = PySequence_Fast(specs, "columns must be a sequence");
    if (list == NULL)
        return NULL;
    Py_ssize_t width = PySequence_Fast_GET_SIZE(list);
    if (width > INT16_MAX) {
        Py_DECREF(list);
        PyErr_SetString(PyExc_ValueError, "more columns than a COPY tuple holds");
        return NULL;
    }
    RowEncoder *self = (RowEncoder *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    Py_INCREF(copy_row);
    self->copy_row = copy_row;
    Py_INCREF(copy_tuple);
    self->copy_tuple = copy_tuple;
    Py_INCREF(not_binary);
    self->not_binary = not_binary;
    Py_INCREF(decimal);
    self->decimal = decimal;
    Py_INCREF(dumps);
    self->dumps = dumps;
    self->columns = PyMem_Calloc(width ? (size_t)width : 1, sizeof(Column));
    if (self->columns == NULL) {
        Py_DECREF(list);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->width = width;
    self->vectorcall = RowEncoder_vectorcall;
    for (Py_ssize_t i = 0; i < width; i++) {
        if (read_column(&self->columns[i], PySequence_Fast_GET_ITEM(list, i), 0) < 0) {
            Py_DECREF(list);
            Py_DECREF(self);
            return NULL;
        }
    }
    Py_DECREF(list);
    return (PyObject *)self;
}

static void
RowEncoder_dealloc(RowEncoder *self)
{
    free_columns(self->columns, self->width);
    PyMem_Free(self->columns);
    Py_XDECREF(self->copy_row);
    Py_XDECREF(self->copy_tuple);
    Py_XDECREF(self->not_binary);
    Py_XDECREF(self->decimal);
    Py_XDECREF(self->dumps);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
encode_row(RowEncoder *self, PyObject *row)
{
    if (Py_TYPE(row) == (PyTypeObject *)self->copy_tuple) {
        Py_INCREF(row);
        return row;
    }
    if (Py_TYPE(row) == (PyTypeObject *)self->copy_row) {
        PyErr_SetNone(self->not_binary);
        return NULL;
    }
    PyObject *values = PySequence_Fast(row, "a row must be a sequence");
    if (values == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(values) != self->width) {
        Py_DECREF(values);
        PyErr_SetNone(self->not_binary);
        return NULL;
    }
    Buffer buffer;
    buffer.data = buffer.stack;
    buffer.size = 2;
    buffer.capacity = STACK_BYTES;
    set_u16(buffer.data, (uint16_t)self->width);
    PyObject *result = NULL;
    Py_ssize_t i;
    for (i = 0; i < self->width; i++) {
        if (PySequence_Fast_GET_SIZE(values) != self->width) {
            PyErr_SetNone(self->not_binary); /* a list a Python encoder shortened */
            break;
        }
        PyObject *value = PySequence_Fast_GET_ITEM(values, i);
        Py_INCREF(value); /* held while a Python encoder might change the list */
        int failed = put_value(self, &buffer, &self->columns[i], value) < 0;
        Py_DECREF(value);
        if (failed)
            break;
    }
    if (i == self->width)
        result = PyBytes_FromStringAndSize(buffer.data, buffer.size);
    if (buffer.data != buffer.stack)
        PyMem_Free(buffer.data);
    Py_DECREF(values);
    return result;
}

static PyObject *
RowEncoder_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a RowEncoder takes one row");
        return NULL;
    }
    return encode_row((RowEncoder *)self, args[0]);
}

static PyObject *
RowEncoder_call(RowEncoder *self, PyObject *args, PyObject *kwargs)
{
    PyObject *row;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "a RowEncoder takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "RowEncoder", 1, 1, &row))
        return NULL;
    return encode_row(self, row);
}

PyDoc_STRVAR(RowEncoder_doc,
             "RowEncoder(columns, copy_row, copy_tuple, not_binary, decimal, dumps)\n\n"
             "Called with a row, gives its binary COPY tuple; see pg_bulk_ingest._binary.");

static PyTypeObject RowEncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pg_bulk_ingest._binrow.RowEncoder",
    .tp_basicsize = sizeof(RowEncoder),
    .tp_dealloc = (destructor)RowEncoder_dealloc,
    .tp_call = (ternaryfunc)RowEncoder_call,
    .tp_vectorcall_offset = offsetof(RowEncoder, vectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = RowEncoder_doc,
    .tp_new = RowEncoder_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pg_bulk_ingest._binrow",
    .m_doc = "Rows of Python values to binary COPY tuples, as pg_bulk_ingest._binary.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__binrow(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    if (PyType_Ready(&RowEncoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RowEncoderType);
    if (PyModule_AddObject(m, "RowEncoder", (PyObject *)&RowEncoderType) < 0) {
        Py_DECREF(&RowEncoderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
