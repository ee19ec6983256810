/* Lua 5.4 pattern matching for the sandbox, written for wsgate from the reference manual
   (section 6.4.1, "Patterns", and the descriptions of string.find, match, gmatch and gsub).

   Why: the hook that stops a run past its deadline only fires between VM instructions, and a
   pattern such as ".-.-.-.-b" against a long subject backtracks for minutes inside one call to
   the standard matcher. This matcher has the same semantics (results, lazily raised errors and
   their messages, the recursion limit of "pattern too complex") but counts its work and checks
   the deadline every PM_TICK units, raising the usual timeout error from inside the match.

   The matcher is a backtracking interpreter over the pattern text. A "unit" of work is one
   pattern item tried at one subject position, or one subject byte scanned by a repetition, %b
   or a back-reference. Errors are raised with luaL_error (a longjmp): nothing here holds memory
   outside the Lua stack, so unwinding from any depth is safe.

   Also here: string.rep, bounded so that it cannot spend long in one call (see pm_rep). */

#define _GNU_SOURCE /* memmem */

#include "cls_internal.h"

#include <ctype.h>
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

/* Most captures in one pattern (LUA_MAXCAPTURES in the reference implementation). */
#define PM_MAXCAPTURES 32
/* Most nested matcher calls (one per capture boundary and per quantifier alternative) before
   "pattern too complex". */
#define PM_MAXDEPTH 200
/* Units of work between two deadline checks. */
#define PM_TICK 4096

/* Capture lengths that are not lengths. */
#define PM_OPEN (-1)     /* started, not yet closed */
#define PM_POSITION (-2) /* "()": captures a position */

typedef struct {
    const char *start;
    ptrdiff_t len; /* or PM_OPEN / PM_POSITION */
} pm_capture;

typedef struct {
    lua_State *L;
    const char *subject, *subject_end; /* both NUL-terminated by Lua: *subject_end == '\0' */
    const char *pattern_end;           /* likewise */
    cls_control *control;              /* found at the first deadline check; NULL if none */
    int control_known;
    long budget;                       /* units left before the next deadline check */
    int depth;                         /* nested calls left before "pattern too complex" */
    int ncaptures;
    pm_capture captures[PM_MAXCAPTURES];
} pm_state;

/* MARK: Deadline */

static void pm_tick(pm_state *m) {
    m->budget = PM_TICK;
    if (!m->control_known) { /* not looked up in advance: most matches never get here */
        m->control = cls_control_of(m->L);
        m->control_known = 1;
    }
    cls_control *c = m->control;
    if (c != NULL && c->deadline != 0 && cls_now_ns() >= c->deadline) cls_raise_timeout(m->L, c, 1);
}

/* One unit of work (a macro: the debug build does not inline). */
#define PM_STEP(m)                                                                                 \
    do {                                                                                           \
        if (--(m)->budget <= 0) pm_tick(m);                                                        \
    } while (0)

/* `units` units of work at once, after a scan. */
static void pm_charge(pm_state *m, size_t units) {
    if (units < (size_t)m->budget)
        m->budget -= (long)units;
    else
        pm_tick(m);
}

static void pm_prepare(pm_state *m, lua_State *L, const char *s, size_t ls, const char *p, size_t lp) {
    m->L = L;
    m->subject = s;
    m->subject_end = s + ls;
    m->pattern_end = p + lp;
    m->control = NULL;
    m->control_known = 0;
    m->budget = PM_TICK;
}

/* Before each attempt at a new subject position. */
static void pm_restart(pm_state *m) {
    m->ncaptures = 0;
    m->depth = PM_MAXDEPTH;
}

/* MARK: Single-character classes */

/* The classes, as bits: which classes each byte is in, and which class each class letter (in
   either case) names. Filled once from <ctype.h>, so the classes follow the C library's locale
   at that time, as the reference implementation's do (the gateway never changes the locale).
   %z (the zero byte) is the 5.1 class that 5.4 no longer documents but still implements; it is
   kept for identical results. */
static unsigned short pm_classes[256];
static unsigned short pm_letters[256];
static pthread_once_t pm_classes_once = PTHREAD_ONCE_INIT;

static void pm_fill_classes(void) {
    static const char letters[] = "acdglpsuwxz";
    for (int i = 0; letters[i] != '\0'; i++) {
        unsigned short bit = (unsigned short)(1u << i);
        pm_letters[(unsigned char)letters[i]] = bit;
        pm_letters[toupper((unsigned char)letters[i])] = bit;
        for (int c = 0; c < 256; c++) {
            int in;
            switch (letters[i]) {
            case 'a': in = isalpha(c); break;
            case 'c': in = iscntrl(c); break;
            case 'd': in = isdigit(c); break;
            case 'g': in = isgraph(c); break;
            case 'l': in = islower(c); break;
            case 'p': in = ispunct(c); break;
            case 's': in = isspace(c); break;
            case 'u': in = isupper(c); break;
            case 'w': in = isalnum(c); break;
            case 'x': in = isxdigit(c); break;
            default: in = c == 0; break;
            }
            if (in) pm_classes[c] |= bit;
        }
    }
}

/* Whether byte c (0-255) belongs to the class %x for byte x (0-255): a class letter, its
   upper-case complement, or any other byte, which stands for itself. A macro: the debug build
   does not inline, and this runs for every byte a class is tried on. */
#define PM_CLASS(c, x)                                                                             \
    (pm_letters[x] != 0 ? ((pm_classes[c] & pm_letters[x]) != 0) != ((x) < 'a') : (x) == (c))

/* Whether byte c belongs to the set whose '[' is at `open` and whose closing ']' is at `close`. */
static int pm_set(int c, const char *open, const char *close) {
    const char *p = open + 1;
    int found = 1;
    if (*p == '^') {
        found = 0;
        p++;
    }
    while (p < close) {
        unsigned char first = (unsigned char)*p;
        if (first == '%') {
            if (PM_CLASS(c, (unsigned char)p[1])) return found;
            p += 2;
        } else if (p[1] == '-' && p + 2 < close) {
            if (first <= c && c <= (unsigned char)p[2]) return found;
            p += 3;
        } else {
            if (first == c) return found;
            p++;
        }
    }
    return !found;
}

/* One past the single-character class that starts at p (a byte, '.', %x or a set); p is before
   the end of the pattern. */
static const char *pm_class_end(pm_state *m, const char *p) {
    switch (*p++) {
    case '%':
        if (p == m->pattern_end) luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 1;
    case '[':
        if (*p == '^') p++;
        /* The first byte of a set is a member even when it is ']'; %] is a member too. */
        do {
            if (p == m->pattern_end) luaL_error(m->L, "malformed pattern (missing ']')");
            if (*p++ == '%' && p < m->pattern_end) p++;
        } while (*p != ']');
        return p + 1;
    default:
        return p;
    }
}

/* Whether the subject byte at s exists and belongs to the class [p, ep). */
static int pm_single(const pm_state *m, const char *s, const char *p, const char *ep) {
    if (s >= m->subject_end) return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.': return 1;
    case '%': return PM_CLASS(c, (unsigned char)p[1]);
    case '[': return pm_set(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

/* MARK: Matcher */

static const char *pm_match(pm_state *m, const char *s, const char *p);

/* "(" or "()": opens capture `kind` at s and matches the rest of the pattern. */
static const char *pm_open(pm_state *m, const char *s, const char *p, ptrdiff_t kind) {
    if (m->ncaptures >= PM_MAXCAPTURES) luaL_error(m->L, "too many captures");
    pm_capture *capture = &m->captures[m->ncaptures++];
    capture->start = s;
    capture->len = kind;
    const char *end = pm_match(m, s, p);
    if (end == NULL) m->ncaptures--;
    return end;
}

/* ")": closes the innermost open capture at s and matches the rest of the pattern. */
static const char *pm_close(pm_state *m, const char *s, const char *p) {
    int i = m->ncaptures - 1;
    while (i >= 0 && m->captures[i].len != PM_OPEN) i--;
    if (i < 0) luaL_error(m->L, "invalid pattern capture");
    m->captures[i].len = s - m->captures[i].start;
    const char *end = pm_match(m, s, p);
    if (end == NULL) m->captures[i].len = PM_OPEN;
    return end;
}

/* "%bxy" with p at x: the balanced run at s, or NULL. */
static const char *pm_balanced(pm_state *m, const char *s, const char *p) {
    if (p + 1 >= m->pattern_end) luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= m->subject_end || *s != p[0]) return NULL;
    char open = p[0], close = p[1];
    size_t level = 1;
    const char *t = s + 1;
    for (; t < m->subject_end; t++) {
        if (*t == close) {
            if (--level == 0) {
                pm_charge(m, (size_t)(t - s));
                return t + 1;
            }
        } else if (*t == open) {
            level++;
        }
    }
    pm_charge(m, (size_t)(t - s));
    return NULL;
}

/* "%1".."%9" (digit d; "%0" too, which is always invalid): the subject after a copy of that
   capture at s, or NULL. A position capture never matches. */
static const char *pm_backref(pm_state *m, const char *s, int d) {
    int i = d - '1';
    if (i < 0 || i >= m->ncaptures || m->captures[i].len == PM_OPEN)
        luaL_error(m->L, "invalid capture index %%%d", i + 1);
    ptrdiff_t len = m->captures[i].len;
    if (len < 0 || len > m->subject_end - s) return NULL;
    pm_charge(m, (size_t)len);
    return memcmp(m->captures[i].start, s, (size_t)len) == 0 ? s + len : NULL;
}

/* "x*" (s at the first candidate) and "x+" (s after the one match already found): the longest
   run first, then shorter ones. */
static const char *pm_longest(pm_state *m, const char *s, const char *p, const char *ep) {
    const char *t = s, *limit = m->subject_end;
    switch (*p) { /* the run of bytes in the class [p, ep), one loop per kind of class */
    case '.':
        t = limit;
        break;
    case '%': {
        int letter = (unsigned char)p[1];
        while (t < limit && PM_CLASS((unsigned char)*t, letter)) t++;
        break;
    }
    case '[':
        while (t < limit && pm_set((unsigned char)*t, p, ep - 1)) t++;
        break;
    default: {
        char c = *p;
        while (t < limit && *t == c) t++;
        break;
    }
    }
    pm_charge(m, (size_t)(t - s));
    for (;;) {
        const char *end = pm_match(m, t, ep + 1);
        if (end != NULL) return end;
        if (t == s) return NULL;
        t--;
    }
}

/* "x-": the shortest run first, then longer ones. */
static const char *pm_shortest(pm_state *m, const char *s, const char *p, const char *ep) {
    for (;;) {
        const char *end = pm_match(m, s, ep + 1);
        if (end != NULL) return end;
        if (!pm_single(m, s, p, ep)) return NULL;
        s++;
    }
}

/* Matches the pattern from p against the subject from s; returns the end of the match or NULL.
   Items that need no alternatives are handled in the loop; each alternative recurses. */
static const char *pm_match(pm_state *m, const char *s, const char *p) {
    if (m->depth-- == 0) luaL_error(m->L, "pattern too complex");
    for (;;) {
        PM_STEP(m);
        if (p == m->pattern_end) break;
        switch (*p) {
        case '(':
            s = p[1] == ')' ? pm_open(m, s, p + 2, PM_POSITION) : pm_open(m, s, p + 1, PM_OPEN);
            goto done;
        case ')':
            s = pm_close(m, s, p + 1);
            goto done;
        case '$':
            if (p + 1 == m->pattern_end) { /* an anchor only as the pattern's last byte */
                if (s != m->subject_end) s = NULL;
                goto done;
            }
            break;
        case '%':
            switch (p[1]) {
            case 'b':
                s = pm_balanced(m, s, p + 2);
                if (s == NULL) goto done;
                p += 4;
                continue;
            case 'f': {
                p += 2;
                if (*p != '[') luaL_error(m->L, "missing '[' after '%%f' in pattern");
                const char *ep = pm_class_end(m, p);
                int before = s == m->subject ? '\0' : (unsigned char)s[-1];
                int after = (unsigned char)*s; /* '\0' at the end of the subject */
                if (!pm_set(before, p, ep - 1) && pm_set(after, p, ep - 1)) {
                    p = ep;
                    continue;
                }
                s = NULL;
                goto done;
            }
            case '0': case '1': case '2': case '3': case '4':
            case '5': case '6': case '7': case '8': case '9':
                s = pm_backref(m, s, (unsigned char)p[1]);
                if (s == NULL) goto done;
                p += 2;
                continue;
            default:
                break;
            }
            break;
        default:
            break;
        }
        /* A single-character class, perhaps followed by a quantifier. A byte or '.' is tested
           here (the debug build does not inline calls). */
        const char *ep;
        int matched;
        if (*p != '%' && *p != '[') {
            ep = p + 1;
            matched = s < m->subject_end && (*p == '.' || *s == *p);
        } else if (*p == '%' && p + 1 < m->pattern_end) {
            ep = p + 2;
            matched = s < m->subject_end && PM_CLASS((unsigned char)*s, (unsigned char)p[1]);
        } else {
            ep = pm_class_end(m, p);
            matched = pm_single(m, s, p, ep);
        }
        char quantifier = *ep; /* '\0' at the end of the pattern */
        if (!matched) {
            if (quantifier == '*' || quantifier == '?' || quantifier == '-') { /* zero times */
                p = ep + 1;
                continue;
            }
            s = NULL;
            goto done;
        }
        switch (quantifier) {
        case '?': {
            const char *end = pm_match(m, s + 1, ep + 1);
            if (end != NULL) {
                s = end;
                goto done;
            }
            p = ep + 1;
            continue;
        }
        case '+': s = pm_longest(m, s + 1, p, ep); goto done;
        case '*': s = pm_longest(m, s, p, ep); goto done;
        case '-': s = pm_shortest(m, s, p, ep); goto done;
        default:
            s++;
            p = ep;
            continue;
        }
    }
done:
    m->depth++;
    return s;
}

/* MARK: Captures */

/* Capture i of the match [s, e): a string as pointer and length, or a position, pushed (then
   the result is PM_POSITION). With no captures, capture 0 is the whole match. */
static ptrdiff_t pm_capture_at(pm_state *m, int i, const char *s, const char *e, const char **start) {
    if (i >= m->ncaptures) {
        if (i != 0) luaL_error(m->L, "invalid capture index %%%d", i + 1);
        *start = s;
        return e - s;
    }
    const pm_capture *capture = &m->captures[i];
    if (capture->len == PM_OPEN) luaL_error(m->L, "unfinished capture");
    *start = capture->start;
    if (capture->len == PM_POSITION) lua_pushinteger(m->L, (capture->start - m->subject) + 1);
    return capture->len;
}

static void pm_push_capture(pm_state *m, int i, const char *s, const char *e) {
    const char *start;
    ptrdiff_t len = pm_capture_at(m, i, s, e, &start);
    if (len != PM_POSITION) lua_pushlstring(m->L, start, (size_t)len);
}

/* Pushes every capture (the whole match [s, e) when there are none and s is not NULL). */
static int pm_push_captures(pm_state *m, const char *s, const char *e) {
    int n = m->ncaptures == 0 && s != NULL ? 1 : m->ncaptures;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++) pm_push_capture(m, i, s, e);
    return n;
}

/* MARK: Library functions */

/* A 1-based start position from an argument that may count from the end (-1 = the last byte). */
static size_t pm_position(lua_Integer pos, size_t len) {
    if (pos > 0) return (size_t)pos;
    if (pos == 0 || pos < -(lua_Integer)len) return 1;
    return len - (size_t)(-pos) + 1;
}

/* Whether find must treat p as a pattern (it has a byte that is magic at some position). */
static int pm_is_pattern(const char *p, size_t lp) {
    static const char magic[] = "^$*+?.([%-";
    for (size_t i = 0; i < lp; i++)
        if (memchr(magic, p[i], sizeof magic - 1) != NULL) return 1;
    return 0;
}

/* string.find (find = 1) and string.match (find = 0). */
static int pm_find_or_match(lua_State *L, int find) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = pm_position(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || !pm_is_pattern(p, lp))) {
        /* Plain search: memmem is linear in the subject, so it needs no deadline checks. */
        const char *hit = lp == 0 ? s + init : memmem(s + init, ls - init, p, lp);
        if (hit != NULL) {
            lua_pushinteger(L, (hit - s) + 1);
            lua_pushinteger(L, (lua_Integer)((size_t)(hit - s) + lp));
            return 2;
        }
        luaL_pushfail(L);
        return 1;
    }
    int anchored = *p == '^';
    if (anchored) {
        p++;
        lp--;
    }
    pm_state m;
    pm_prepare(&m, L, s, ls, p, lp);
    const char *start = s + init;
    for (;;) {
        pm_restart(&m);
        const char *end = pm_match(&m, start, p);
        if (end != NULL) {
            if (!find) return pm_push_captures(&m, start, end);
            lua_pushinteger(L, (start - s) + 1);
            lua_pushinteger(L, end - s);
            return 2 + pm_push_captures(&m, NULL, NULL);
        }
        if (anchored || start >= m.subject_end) break;
        start++;
    }
    luaL_pushfail(L);
    return 1;
}

static int pm_find(lua_State *L) { return pm_find_or_match(L, 1); }

static int pm_match_fn(lua_State *L) { return pm_find_or_match(L, 0); }

/* The iterator's state. The subject and the pattern are the closure's upvalues, which keeps
   them alive (and Lua never moves a string). */
typedef struct {
    const char *subject, *pattern;
    size_t subject_len, pattern_len;
    size_t next;     /* where the next attempt starts */
    size_t last_end; /* where the last match ended, if `matched` */
    int matched;
} pm_iterator;

/* Upvalues: the subject, the pattern, the pm_iterator. */
static int pm_gmatch_step(lua_State *L) {
    pm_iterator *it = lua_touserdata(L, lua_upvalueindex(3));
    const char *s = it->subject, *p = it->pattern;
    size_t ls = it->subject_len;
    pm_state m;
    pm_prepare(&m, L, s, ls, p, it->pattern_len);
    /* '^' is no anchor here: it would stop the iteration, so it matches itself. */
    for (size_t pos = it->next; pos <= ls; pos++) {
        pm_restart(&m);
        const char *end = pm_match(&m, s + pos, p);
        /* An empty match right where the previous one ended does not count. */
        if (end != NULL && !(it->matched && (size_t)(end - s) == it->last_end)) {
            it->next = it->last_end = (size_t)(end - s);
            it->matched = 1;
            return pm_push_captures(&m, s + pos, end);
        }
    }
    it->next = ls + 1; /* exhausted */
    return 0;
}

static int pm_gmatch(lua_State *L) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = pm_position(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) init = ls + 1; /* nothing left to match, not even an empty string */
    lua_settop(L, 2);
    pm_iterator *it = lua_newuserdatauv(L, sizeof *it, 0);
    it->subject = s;
    it->subject_len = ls;
    it->pattern = p;
    it->pattern_len = lp;
    it->next = init;
    it->last_end = 0;
    it->matched = 0;
    lua_pushcclosure(L, pm_gmatch_step, 3);
    return 1;
}

/* Appends the replacement string (argument 3) for the match [s, e), expanding %0-%9 and %%. */
static void pm_expand(pm_state *m, luaL_Buffer *b, const char *s, const char *e) {
    size_t lr;
    const char *r = lua_tolstring(m->L, 3, &lr);
    const char *r_end = r + lr;
    for (;;) {
        const char *escape = memchr(r, '%', (size_t)(r_end - r));
        if (escape == NULL) break;
        luaL_addlstring(b, r, (size_t)(escape - r));
        int d = (unsigned char)escape[1]; /* the terminating '\0' when '%' is last */
        if (d == '%') {
            luaL_addchar(b, '%');
        } else if (d == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (isdigit(d)) {
            const char *start;
            ptrdiff_t len = pm_capture_at(m, d - '1', s, e, &start);
            if (len == PM_POSITION)
                luaL_addvalue(b); /* the pushed position, as a numeral */
            else
                luaL_addlstring(b, start, (size_t)len);
        } else {
            luaL_error(m->L, "invalid use of '%c' in replacement string", '%');
        }
        r = escape + 2;
    }
    luaL_addlstring(b, r, (size_t)(r_end - r));
}

/* Appends the replacement for the match [s, e); returns whether it differs from the match
   (false and nil from a table or function keep the match). */
static int pm_replace(pm_state *m, luaL_Buffer *b, const char *s, const char *e, int kind) {
    lua_State *L = m->L;
    if (kind == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = pm_push_captures(m, s, e);
        lua_call(L, n, 1);
    } else if (kind == LUA_TTABLE) {
        pm_push_capture(m, 0, s, e);
        lua_gettable(L, 3);
    } else {
        pm_expand(m, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)", lua_typename(L, lua_type(L, -1)));
    luaL_addvalue(b);
    return 1;
}

static int pm_gsub(lua_State *L) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int kind = lua_type(L, 3);
    lua_Integer limit = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argexpected(L, kind == LUA_TNUMBER || kind == LUA_TSTRING || kind == LUA_TFUNCTION || kind == LUA_TTABLE,
                     3, "string/function/table");
    int anchored = *p == '^';
    if (anchored) {
        p++;
        lp--;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    pm_state m;
    pm_prepare(&m, L, s, ls, p, lp);
    const char *at = s, *last_end = NULL;
    lua_Integer count = 0;
    int changed = 0;
    while (count < limit) {
        pm_restart(&m);
        const char *end = pm_match(&m, at, p);
        if (end != NULL && end != last_end) { /* no empty match right after the previous match */
            count++;
            changed |= pm_replace(&m, &b, at, end, kind);
            at = last_end = end;
        } else if (at < m.subject_end) {
            luaL_addchar(&b, *at++);
        } else {
            break;
        }
        if (anchored) break;
    }
    if (changed) {
        luaL_addlstring(&b, at, (size_t)(m.subject_end - at));
        luaL_pushresult(&b);
    } else {
        lua_pushvalue(L, 1); /* nothing replaced: the subject itself */
    }
    lua_pushinteger(L, count);
    return 2;
}

/* MARK: string.rep */

/* Results the standard library refuses as "resulting string too large" (INT_MAX bytes). */
#define PM_REP_HARD_MAX ((size_t)0x7fffffff)
/* Results refused early, unless the memory limit refuses them anyway. */
#define PM_REP_MAX ((size_t)64 << 20)

/* Like the standard string.rep, except that (1) a result over PM_REP_MAX is refused with
   "resulting string too large" unless the state's memory limit is smaller than it (then the
   allocation fails with "not enough memory", as before), and (2) an empty result is returned at
   once: the standard one loops n times copying nothing, which string.rep("", 1e15) turns into a
   hang inside one C call. The copy doubles instead of looping n times. */
static int pm_rep(lua_State *L) {
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || l + lsep == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (l + lsep < l || l + lsep > PM_REP_HARD_MAX / (size_t)n) return luaL_error(L, "resulting string too large");
    size_t unit = l + lsep;
    size_t total = (size_t)n * unit - lsep; /* no separator after the last copy */
    if (total > PM_REP_MAX) {
        cls_control *c = cls_control_of(L);
        if (c == NULL || !c->enforcing || c->limit == 0 || total <= c->limit)
            return luaL_error(L, "resulting string too large");
    }
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, total);
    size_t filled = l < total ? l : total;
    memcpy(out, s, filled);
    if (filled < total) {
        size_t k = lsep < total - filled ? lsep : total - filled;
        memcpy(out + filled, sep, k);
        filled += k;
    }
    /* `filled` is a whole number of units until the last copy, which ends with `s`. */
    while (filled < total) {
        size_t k = filled < total - filled ? filled : total - filled;
        memcpy(out + filled, out, k);
        filled += k;
    }
    luaL_pushresultsize(&b, total);
    return 1;
}

/* MARK: Installation */

void cls_install_string_functions(lua_State *L, int index) {
    static const luaL_Reg functions[] = {
        {"find", pm_find}, {"match", pm_match_fn}, {"gmatch", pm_gmatch},
        {"gsub", pm_gsub}, {"rep", pm_rep},        {NULL, NULL},
    };
    pthread_once(&pm_classes_once, pm_fill_classes);
    index = lua_absindex(L, index);
    for (const luaL_Reg *f = functions; f->name != NULL; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, index, f->name);
    }
}
