/* Avro values in the schema registry's wire format to the COPY line of their row, in C: part of
 * sink/_copyline.c (included there, after `line_of`).
 *
 * `AvroLine(line, key_general)` holds one table's `Line` and, per schema id, a program compiled
 * from the id's Avro record schema by sink/avroline.py (`learn(schema_id, program)`).
 * `AvroLine.row(key, value)` transcodes the Avro value to the JSON object bytes orjson would
 * write for what fastavro reads (the columns' fields; other fields are read and checked, not
 * written), then hands them to the line. Anything it is not sure of gives None, and the
 * message takes the general way, which reads it with fastavro and raises the errors that name
 * it: a schema id not learned, bytes that do not read (cut short, a bad varint, invalid UTF-8,
 * a negative length, a union or enum index out of range, bytes left over), a value whose
 * column the program does not write natively (op FAIL), a value out of the range fastavro
 * reads, nesting deeper than MAX_AVRO_DEPTH. */

/* The program's operations, numbered from 0 in this order; exported as AVRO_OPS. */
#define AVRO_OP_LIST(X) \
    X(FAIL)             \
    X(NULL)             \
    X(BOOLEAN)          \
    X(INT)              \
    X(LONG)             \
    X(FLOAT)            \
    X(DOUBLE)           \
    X(STRING)           \
    X(BYTES)            \
    X(FIXED)            \
    X(ENUM)             \
    X(ARRAY)            \
    X(MAP)              \
    X(RECORD)           \
    X(UNION)            \
    X(DECIMAL)          \
    X(TIMESTAMP)        \
    X(DATE)             \
    X(UUID)
#define AVRO_OP_ENUM(name) A_##name,
enum avro_op { AVRO_OP_LIST(AVRO_OP_ENUM) A_END };
#undef AVRO_OP_ENUM

#define MAX_AVRO_DEPTH 64       /* nested containers; deeper values take the general way */
#define MAX_AVRO_NODES 4096     /* a bigger schema takes the general way */
#define MAX_MAP_KEYS 64         /* a written map with more entries takes the general way */
#define MAX_DECIMAL_BYTES 32    /* a longer decimal's bytes take the general way */
#define MAX_AVRO_JSON (64 << 20) /* JSON bytes of one value */
/* Days from 0001-01-01 (ordinal 1) to 1970-01-01; and date.max's ordinal. */
#define EPOCH_ORDINAL 719163LL
#define MAX_ORDINAL 3652059LL

/* One node of a program: (op, a, b, c, labels, children) from sink/avroline.py.
 * FIXED: a the size. DECIMAL: a scale, b precision, c the fixed size or -1 for bytes.
 * TIMESTAMP: a the microseconds of one unit (1000 for millis, 1 for micros).
 * ENUM: labels the symbols as JSON strings. RECORD: labels `"name":` per field, empty for a
 * field read and not written. UNION: children the branches. ARRAY, MAP: one child. */
typedef struct {
    int op;
    long long a, b, c;
    Py_ssize_t count;
    const char **labels;
    Py_ssize_t *label_lens;
    Py_ssize_t *children;
} ANode;

typedef struct {
    ANode *nodes;
    Py_ssize_t count, cap;
    PyObject *source; /* the program tuple: owns the labels' bytes */
} Program;

static void program_free(Program *program) {
    for (Py_ssize_t i = 0; i < program->count; i++) {
        PyMem_Free(program->nodes[i].labels);
        PyMem_Free(program->nodes[i].label_lens);
        PyMem_Free(program->nodes[i].children);
    }
    PyMem_Free(program->nodes);
    Py_XDECREF(program->source);
    PyMem_Free(program);
}

static void program_capsule_free(PyObject *capsule) {
    program_free(PyCapsule_GetPointer(capsule, "sink._copyline.avro_program"));
}

/* Compiles one node (a tuple) and its children: its index, or -1 with an exception. */
static Py_ssize_t program_node(Program *program, PyObject *node, int depth) {
    PyObject *labels, *children;
    int op;
    long long a, b, c;
    if (depth > MAX_AVRO_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "the program nests too deep");
        return -1;
    }
    if (!PyTuple_Check(node) ||
        !PyArg_ParseTuple(node, "iLLLO!O!", &op, &a, &b, &c, &PyTuple_Type, &labels,
                          &PyTuple_Type, &children)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a node is a tuple");
        return -1;
    }
    if (op < 0 || op >= A_END) {
        PyErr_Format(PyExc_ValueError, "unknown op %d", op);
        return -1;
    }
    if (program->count >= MAX_AVRO_NODES) {
        PyErr_SetString(PyExc_ValueError, "the program is too big");
        return -1;
    }
    if (program->count == program->cap) {
        Py_ssize_t cap = program->cap ? program->cap * 2 : 16;
        ANode *nodes = PyMem_Realloc(program->nodes, (size_t)cap * sizeof(ANode));
        if (nodes == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        program->nodes = nodes;
        program->cap = cap;
    }
    Py_ssize_t index = program->count++;
    ANode *n = &program->nodes[index];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->a = a;
    n->b = b;
    n->c = c;
    Py_ssize_t nlabels = PyTuple_GET_SIZE(labels), nchildren = PyTuple_GET_SIZE(children);
    n->count = op == A_ENUM ? nlabels : nchildren;
    if ((op == A_RECORD && nlabels != nchildren) || ((op == A_ARRAY || op == A_MAP) && nchildren != 1) ||
        (op == A_FIXED && a < 0) || (op == A_DECIMAL && (a < 0 || b < 1 || c < -1)) ||
        (op == A_TIMESTAMP && a != 1 && a != 1000)) {
        PyErr_Format(PyExc_ValueError, "a malformed node of op %d", op);
        return -1;
    }
    if (nlabels > 0) {
        n->labels = PyMem_Calloc((size_t)nlabels, sizeof(char *));
        n->label_lens = PyMem_Calloc((size_t)nlabels, sizeof(Py_ssize_t));
        if (n->labels == NULL || n->label_lens == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < nlabels; i++) {
            PyObject *label = PyTuple_GET_ITEM(labels, i);
            if (!PyBytes_Check(label)) {
                PyErr_SetString(PyExc_TypeError, "labels are bytes");
                return -1;
            }
            n->labels[i] = PyBytes_AS_STRING(label);
            n->label_lens[i] = PyBytes_GET_SIZE(label);
        }
    }
    if (nchildren > 0) {
        Py_ssize_t *kids = PyMem_Calloc((size_t)nchildren, sizeof(Py_ssize_t));
        if (kids == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        program->nodes[index].children = kids;
        for (Py_ssize_t i = 0; i < nchildren; i++) {
            Py_ssize_t child = program_node(program, PyTuple_GET_ITEM(children, i), depth + 1);
            if (child < 0) return -1;
            kids[i] = child; /* `kids` stays put: only the node array moves */
        }
    }
    return index;
}

/* ---- reading Avro, writing JSON as orjson writes what fastavro reads ---- */

typedef struct {
    const unsigned char *p, *end;
    const ANode *nodes;
    Out *out;
} AReader;

/* A zigzag varint: 0, or -1 cut short or beyond 64 bits. */
static int read_long(AReader *r, long long *value) {
    unsigned long long u = 0;
    for (int shift = 0;; shift += 7) {
        if (r->p >= r->end) return -1;
        unsigned char b = *r->p++;
        if (shift == 63 && b > 1) return -1;
        u |= (unsigned long long)(b & 0x7F) << shift;
        if (!(b & 0x80)) break;
        if (shift == 63) return -1;
    }
    *value = (long long)(u >> 1) ^ -(long long)(u & 1);
    return 0;
}

/* A length (of bytes, a string, a decimal): within what is left. */
static int read_length(AReader *r, Py_ssize_t *n) {
    long long length;
    if (read_long(r, &length) < 0 || length < 0 || length > r->end - r->p) return -1;
    *n = (Py_ssize_t)length;
    return 0;
}

/* A JSON string of valid UTF-8 text, escaped as orjson escapes. -1 for invalid UTF-8. */
static int put_json_string(Out *out, const unsigned char *p, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *end = p + n, *run = p;
    if (out_put(out, "\"", 1) < 0) return -1;
    while (p < end) {
        unsigned char c = *p;
        if (c >= 0x80) {
            int k = utf8_length(p, end);
            if (k == 0) return -1;
            p += k;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            p++;
            continue;
        }
        if (out_put(out, run, (size_t)(p - run)) < 0) return -1;
        char escape[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        int status;
        switch (c) {
        case '"': status = out_put(out, "\\\"", 2); break;
        case '\\': status = out_put(out, "\\\\", 2); break;
        case '\b': status = out_put(out, "\\b", 2); break;
        case '\f': status = out_put(out, "\\f", 2); break;
        case '\n': status = out_put(out, "\\n", 2); break;
        case '\r': status = out_put(out, "\\r", 2); break;
        case '\t': status = out_put(out, "\\t", 2); break;
        default: status = out_put(out, escape, 6);
        }
        if (status < 0) return -1;
        run = ++p;
    }
    if (out_put(out, run, (size_t)(end - run)) < 0) return -1;
    return out_put(out, "\"", 1);
}

static int put_long(Out *out, long long value) {
    char text[24];
    int n = snprintf(text, sizeof text, "%lld", value);
    return out_put(out, text, (size_t)n);
}

/* Python's repr() of a finite double; -1 for NaN or an infinity (not JSON). */
static int put_repr(Out *out, double value) {
    if (!isfinite(value)) return -1;
    char *text = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!text) {
        PyErr_Clear();
        return -1;
    }
    int status = out_put(out, text, strlen(text));
    PyMem_Free(text);
    return status;
}

static long long floor_div(long long a, long long b) {
    long long q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* The civil date of a day count from 1970-01-01 (H. Hinnant's days_from_civil, inverted);
 * -1 outside years 1 to 9999, where Python's dates end. */
static int civil(long long days, int *year, int *month, int *day) {
    long long ordinal = days + EPOCH_ORDINAL;
    if (ordinal < 1 || ordinal > MAX_ORDINAL) return -1;
    long long z = days + 719468;
    long long era = floor_div(z, 146097);
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *day = (int)(doy - (153 * mp + 2) / 5 + 1);
    *month = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = (int)(yoe + era * 400 + (*month <= 2));
    return 0;
}

/* A date as "YYYY-MM-DD" (date.isoformat()); -1 out of range. */
static int put_date(Out *out, long long days, int emit) {
    int year, month, day;
    if (civil(days, &year, &month, &day) < 0) return -1;
    if (!emit) return 0;
    char text[16];
    int n = snprintf(text, sizeof text, "\"%04d-%02d-%02d\"", year, month, day);
    return out_put(out, text, (size_t)n);
}

/* An instant, microseconds from the epoch, as orjson writes an aware UTC datetime:
 * "YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00"; -1 out of range. */
static int put_instant(Out *out, long long units, long long unit, int emit) {
    if (units > LLONG_MAX / unit || units < LLONG_MIN / unit) return -1;
    long long micros = units * unit;
    long long seconds = floor_div(micros, 1000000), fraction = micros - seconds * 1000000;
    long long days = floor_div(seconds, 86400), clock = seconds - days * 86400;
    int year, month, day;
    if (civil(days, &year, &month, &day) < 0) return -1;
    if (!emit) return 0;
    char text[48];
    int n = snprintf(text, sizeof text, "\"%04d-%02d-%02dT%02d:%02d:%02d", year, month, day,
                     (int)(clock / 3600), (int)(clock / 60 % 60), (int)(clock % 60));
    if (fraction) n += snprintf(text + n, sizeof text - (size_t)n, ".%06lld", fraction);
    memcpy(text + n, "+00:00\"", 7);
    return out_put(out, text, (size_t)n + 7);
}

/* A decimal's two's complement big-endian bytes, as str() writes fastavro's Decimal with
 * exponent -scale: -1 where it has more digits than the precision (fastavro rounds), or
 * where str() would write an exponent. */
static int put_decimal(Out *out, const unsigned char *p, Py_ssize_t n, long long scale,
                       long long precision) {
    unsigned char magnitude[MAX_DECIMAL_BYTES];
    char digits[MAX_DECIMAL_BYTES * 3 + 1];
    int negative = n > 0 && (p[0] & 0x80), count = 0;
    if (n > MAX_DECIMAL_BYTES) return -1;
    memcpy(magnitude, p, (size_t)n);
    if (negative) { /* invert and add one */
        int carry = 1;
        for (Py_ssize_t i = n - 1; i >= 0; i--) {
            int v = (unsigned char)~magnitude[i] + carry;
            magnitude[i] = (unsigned char)v;
            carry = v >> 8;
        }
    }
    for (;;) { /* least significant digit first */
        int rest = 0, nonzero = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int v = rest * 256 + magnitude[i];
            magnitude[i] = (unsigned char)(v / 10);
            rest = v % 10;
            nonzero |= magnitude[i];
        }
        digits[count++] = (char)('0' + rest);
        if (!nonzero) break;
    }
    if (count > precision) return -1;
    long long left = count - scale; /* digits before the point */
    if (left <= -6) return -1;      /* str() writes an exponent */
    char text[MAX_DECIMAL_BYTES * 3 + 16];
    int k = 0;
    if (negative) text[k++] = '-';
    if (left <= 0) {
        text[k++] = '0';
        text[k++] = '.';
        for (long long i = 0; i < -left; i++) text[k++] = '0';
    }
    for (int i = count - 1; i >= 0; i--) {
        text[k++] = digits[i];
        if (left > 0 && count - i == left && i > 0) text[k++] = '.';
    }
    return out_put(out, text, (size_t)k);
}

static int avro_value(AReader *r, Py_ssize_t index, int emit, int depth);

/* Array or map blocks: a count (negative: then a byte size), items, until a count of 0. */
static int avro_blocks(AReader *r, const ANode *node, int emit, int depth) {
    int map = node->op == A_MAP, first = 1;
    const unsigned char *keys[MAX_MAP_KEYS];
    Py_ssize_t key_lens[MAX_MAP_KEYS], nkeys = 0;
    if (emit && out_put(r->out, map ? "{" : "[", 1) < 0) return -1;
    for (;;) {
        long long count, size;
        if (read_long(r, &count) < 0) return -1;
        if (count == 0) break;
        if (count < 0) {
            if (count == LLONG_MIN || read_long(r, &size) < 0) return -1;
            count = -count;
        }
        if (count > r->end - r->p) return -1; /* zero-byte items (nulls) by the billion */
        for (long long i = 0; i < count; i++) {
            if (emit && !first && out_put(r->out, ",", 1) < 0) return -1;
            first = 0;
            if (map) {
                Py_ssize_t n;
                if (read_length(r, &n) < 0) return -1;
                const unsigned char *key = r->p;
                r->p += n;
                if (!emit) {
                    if (valid_utf8(key, n) < 0) return -1;
                } else {
                    /* fastavro's dict keeps the first place of a repeated key: not sure. */
                    if (nkeys == MAX_MAP_KEYS) return -1;
                    for (Py_ssize_t k = 0; k < nkeys; k++)
                        if (key_lens[k] == n && memcmp(keys[k], key, (size_t)n) == 0) return -1;
                    keys[nkeys] = key;
                    key_lens[nkeys++] = n;
                    if (put_json_string(r->out, key, n) < 0 || out_put(r->out, ":", 1) < 0)
                        return -1;
                }
            }
            if (avro_value(r, node->children[0], emit, depth + 1) < 0) return -1;
        }
    }
    if (emit && out_put(r->out, map ? "}" : "]", 1) < 0) return -1;
    return 0;
}

/* One value of node `index`: read (and checked) always, written as JSON when `emit`. */
static int avro_value(AReader *r, Py_ssize_t index, int emit, int depth) {
    const ANode *node = &r->nodes[index];
    long long value;
    Py_ssize_t n;
    if (depth > MAX_AVRO_DEPTH || r->out->len > MAX_AVRO_JSON) return -1;
    switch ((enum avro_op)node->op) {
    case A_FAIL:
    case A_END:
        return -1;
    case A_NULL:
        return emit ? out_put(r->out, "null", 4) : 0;
    case A_BOOLEAN:
        if (r->p >= r->end || *r->p > 1) return -1;
        value = *r->p++;
        return emit ? out_put(r->out, value ? "true" : "false", value ? 4 : 5) : 0;
    case A_INT:
    case A_LONG:
        if (read_long(r, &value) < 0) return -1;
        if (node->op == A_INT && (value < INT32_MIN || value > INT32_MAX)) return -1;
        return emit ? put_long(r->out, value) : 0;
    case A_FLOAT:
    case A_DOUBLE: {
        Py_ssize_t size = node->op == A_FLOAT ? 4 : 8;
        if (r->end - r->p < size) return -1;
        uint64_t bits = 0;
        for (Py_ssize_t i = size - 1; i >= 0; i--) bits = bits << 8 | r->p[i];
        r->p += size;
        if (!emit) return 0;
        if (size == 4) {
            uint32_t bits32 = (uint32_t)bits;
            float single;
            memcpy(&single, &bits32, 4);
            return put_repr(r->out, (double)single);
        }
        double number;
        memcpy(&number, &bits, 8);
        return put_repr(r->out, number);
    }
    case A_STRING:
    case A_UUID: {
        if (read_length(r, &n) < 0) return -1;
        const unsigned char *text = r->p;
        r->p += n;
        if (node->op == A_UUID) { /* fastavro's UUID(text): canonical lower case only */
            if (!uuid_shape(text, n)) return -1;
            for (Py_ssize_t i = 0; i < n; i++)
                if (text[i] >= 'A' && text[i] <= 'F') return -1;
        }
        if (!emit) return valid_utf8(text, n);
        return put_json_string(r->out, text, n);
    }
    case A_BYTES:
        if (emit || read_length(r, &n) < 0) return -1;
        r->p += n;
        return 0;
    case A_FIXED:
        if (emit || r->end - r->p < node->a) return -1;
        r->p += node->a;
        return 0;
    case A_ENUM:
        if (read_long(r, &value) < 0 || value < 0 || value >= node->count) return -1;
        return emit ? out_put(r->out, node->labels[value], (size_t)node->label_lens[value]) : 0;
    case A_ARRAY:
    case A_MAP:
        return avro_blocks(r, node, emit, depth);
    case A_RECORD: {
        /* The top level writes the fields with labels only: it is the object the line reads. */
        int first = 1;
        if (emit && out_put(r->out, "{", 1) < 0) return -1;
        for (Py_ssize_t i = 0; i < node->count; i++) {
            int field = emit && node->label_lens[i] > 0;
            if (field) {
                if (!first && out_put(r->out, ",", 1) < 0) return -1;
                first = 0;
                if (out_put(r->out, node->labels[i], (size_t)node->label_lens[i]) < 0) return -1;
            }
            if (avro_value(r, node->children[i], field, depth + 1) < 0) return -1;
        }
        return emit ? out_put(r->out, "}", 1) : 0;
    }
    case A_UNION:
        if (read_long(r, &value) < 0 || value < 0 || value >= node->count) return -1;
        return avro_value(r, node->children[value], emit, depth);
    case A_DECIMAL: {
        if (node->c >= 0) {
            if (r->end - r->p < node->c) return -1;
            n = (Py_ssize_t)node->c;
        } else if (read_length(r, &n) < 0) {
            return -1;
        }
        const unsigned char *bytes = r->p;
        r->p += n;
        return emit ? put_decimal(r->out, bytes, n, node->a, node->b) : 0;
    }
    case A_TIMESTAMP:
        if (read_long(r, &value) < 0) return -1;
        return put_instant(r->out, value, node->a, emit);
    case A_DATE:
        if (read_long(r, &value) < 0 || value < INT32_MIN || value > INT32_MAX) return -1;
        return put_date(r->out, value, emit);
    }
    return -1;
}

/* ---- the type ---- */

typedef struct {
    PyObject_HEAD
    Line *line;
    PyObject *programs; /* schema id (int) -> a program's capsule, or None: the general way */
    int key_general;    /* a message with a key takes the general way (a wire-format key) */
    long long last_id;  /* the schema id of the last message, and its program (or NULL) */
    const Program *last;
    unsigned long long native_rows;
} AvroLine;

static PyTypeObject LineType;

static int AvroLine_traverse(AvroLine *self, visitproc visit, void *arg) {
    Py_VISIT(self->line);
    Py_VISIT(self->programs);
    return 0;
}

static int AvroLine_clear(AvroLine *self) {
    self->last_id = -1;
    self->last = NULL;
    Py_CLEAR(self->line);
    Py_CLEAR(self->programs);
    return 0;
}

static void AvroLine_dealloc(AvroLine *self) {
    PyObject_GC_UnTrack(self);
    AvroLine_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *AvroLine_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"line", "key_general", NULL};
    PyObject *line;
    int key_general;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!p", names, &LineType, &line, &key_general))
        return NULL;
    AvroLine *self = (AvroLine *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->programs = PyDict_New();
    if (self->programs == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(line);
    self->line = (Line *)line;
    self->key_general = key_general;
    self->last_id = -1;
    return (PyObject *)self;
}

/* learn(schema_id, program): how values of this schema id are read from now on; None: the
 * general way. An id learned once keeps its program. */
static PyObject *AvroLine_learn(AvroLine *self, PyObject *args) {
    long long schema_id;
    PyObject *source;
    if (!PyArg_ParseTuple(args, "LO", &schema_id, &source)) return NULL;
    if (self->programs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the line was cleared");
        return NULL;
    }
    if (schema_id < 0 || schema_id > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_ValueError, "a schema id takes 4 bytes");
        return NULL;
    }
    PyObject *id = PyLong_FromLongLong(schema_id);
    if (id == NULL) return NULL;
    int known = PyDict_Contains(self->programs, id);
    if (known != 0) {
        Py_DECREF(id);
        if (known < 0) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *entry = Py_None;
    Py_INCREF(entry);
    if (source != Py_None) {
        Program *program = PyMem_Calloc(1, sizeof(Program));
        if (program == NULL) {
            Py_DECREF(id);
            Py_DECREF(entry);
            return PyErr_NoMemory();
        }
        Py_INCREF(source);
        program->source = source;
        if (program_node(program, source, 0) != 0) { /* the root is node 0 */
            program_free(program);
            Py_DECREF(id);
            Py_DECREF(entry);
            return NULL;
        }
        Py_DECREF(entry);
        entry = PyCapsule_New(program, "sink._copyline.avro_program", program_capsule_free);
        if (entry == NULL) {
            program_free(program);
            Py_DECREF(id);
            return NULL;
        }
    }
    int status = PyDict_SetItem(self->programs, id, entry);
    Py_DECREF(id);
    Py_DECREF(entry);
    if (status < 0) return NULL;
    self->last_id = -1; /* looked up again */
    Py_RETURN_NONE;
}

/* The program of a schema id: 1 with *program set (NULL: the general way), 0 when not learned,
 * -1 with an exception. */
static int program_of(AvroLine *self, long long schema_id, const Program **program) {
    if (schema_id == self->last_id) {
        *program = self->last;
        return 1;
    }
    PyObject *id = PyLong_FromLongLong(schema_id);
    if (id == NULL) return -1;
    PyObject *entry = PyDict_GetItemWithError(self->programs, id);
    Py_DECREF(id);
    if (entry == NULL) return PyErr_Occurred() ? -1 : 0;
    *program = entry == Py_None ? NULL
                                : PyCapsule_GetPointer(entry, "sink._copyline.avro_program");
    if (entry != Py_None && *program == NULL) return -1;
    self->last_id = schema_id;
    self->last = *program;
    return 1;
}

static PyObject *AvroLine_row(AvroLine *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "row(key, value) takes two arguments");
        return NULL;
    }
    PyObject *key = args[0], *value = args[1], *row = NULL;
    if (self->line == NULL || self->programs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the line was cleared");
        return NULL;
    }
    if (!PyBytes_CheckExact(value) ||
        (key != Py_None && (self->key_general || !PyBytes_CheckExact(key))))
        Py_RETURN_NONE;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(value);
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    if (n < 5 || p[0] != 0) Py_RETURN_NONE;
    long long schema_id = (long long)p[1] << 24 | p[2] << 16 | p[3] << 8 | p[4];
    const Program *program;
    int found = program_of(self, schema_id, &program);
    if (found < 0) return NULL;
    if (found == 0 || program == NULL) Py_RETURN_NONE;
    Out out;
    out.data = out.local;
    out.len = 0;
    out.cap = sizeof out.local;
    out.raw = 0;
    AReader r = {p + 5, p + n, program->nodes, &out};
    if (avro_value(&r, 0, 1, 0) < 0 || r.p != r.end) {
        out_free(&out);
        if (PyErr_Occurred()) return NULL; /* no memory */
        Py_RETURN_NONE;
    }
    found =
        line_of(self->line, key, (const unsigned char *)out.data, (Py_ssize_t)out.len, 0, &row);
    out_free(&out);
    if (found < 0) return NULL;
    if (found == 0) Py_RETURN_NONE;
    self->native_rows++;
    return row;
}

static PyObject *AvroLine_native_rows(AvroLine *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->native_rows);
}

static PyMethodDef AvroLine_methods[] = {
    {"row", (PyCFunction)(void (*)(void))AvroLine_row, METH_FASTCALL,
     "row(key, value): the row of a wire-format Avro value, or None for the general way."},
    {"learn", (PyCFunction)AvroLine_learn, METH_VARARGS,
     "learn(schema_id, program): how values of the schema id are read; None: the general way."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef AvroLine_getset[] = {
    {"native_rows", (getter)AvroLine_native_rows, NULL, "rows given natively so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject AvroLineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sink._copyline.AvroLine",
    .tp_basicsize = sizeof(AvroLine),
    .tp_dealloc = (destructor)AvroLine_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)AvroLine_traverse,
    .tp_clear = (inquiry)AvroLine_clear,
    .tp_doc = "One table's COPY line from a wire-format Avro value, in C.",
    .tp_methods = AvroLine_methods,
    .tp_getset = AvroLine_getset,
    .tp_new = AvroLine_new,
};

/* AVRO_OPS: each op's name and number, as `enum avro_op` has them. */
#define AVRO_OP_NAME(name) #name,
static const char *const avro_op_names[] = {AVRO_OP_LIST(AVRO_OP_NAME)};
#undef AVRO_OP_NAME

static PyObject *avro_ops_dict(void) {
    PyObject *ops = PyDict_New();
    for (int op = 0; ops != NULL && op < A_END; op++) {
        PyObject *number = PyLong_FromLong(op);
        if (number == NULL || PyDict_SetItemString(ops, avro_op_names[op], number) < 0)
            Py_CLEAR(ops);
        Py_XDECREF(number);
    }
    return ops;
}
