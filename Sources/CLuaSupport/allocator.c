/* The allocator of every state made by cls_newstate: it counts what Lua holds against the run's
   memory limit, and keeps freed small blocks for the state's next allocations.

   Why keep blocks: a script's event makes a few small objects (the message string, a table of
   arguments) that the collector frees together, tens at a time. glibc's per-thread cache holds 7
   blocks of a size, so most of those frees, and the allocations after them, went through its
   bins: about a third of the cost of a 64-byte message's string. A state is confined to one
   thread, so its lists need no lock. */

#include "CLuaSupport.h"
#include "cls_internal.h"

#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_STEP 16u
#define SMALL_MAX (SMALL_STEP * CLS_SMALL_CLASSES)

/* Blocks of up to SMALL_MAX bytes are malloc'ed at the size of their class (a multiple of
   SMALL_STEP), so a kept block fits anything of its class. Any block may still go to free(). */
static inline int is_small(size_t size) { return size <= SMALL_MAX; }
static inline unsigned class_of(size_t size) { return (unsigned)((size - 1) / SMALL_STEP); }

static void *take_small(cls_control *c, size_t size) {
    unsigned k = class_of(size);
    void *block = c->kept[k];
    if (block != NULL) {
        c->kept[k] = *(void **)block;
        c->kept_count[k]--;
        return block;
    }
    return malloc((k + 1) * SMALL_STEP);
}

/* `size` is what the block was asked for (Lua's osize), at most its capacity. */
static void give_back(cls_control *c, void *block, size_t size) {
    if (is_small(size)) {
        unsigned k = class_of(size);
        if (c->kept_count[k] < CLS_SMALL_KEEP) {
            *(void **)block = c->kept[k];
            c->kept[k] = block;
            c->kept_count[k]++;
            return;
        }
    }
    free(block);
}

/* A block whose size changes: in place when it stays in its class or both sizes are large. */
static void *resize(cls_control *c, void *ptr, size_t osize, size_t nsize) {
    if (is_small(osize) && is_small(nsize) && class_of(osize) == class_of(nsize)) return ptr;
    if (!is_small(osize) && !is_small(nsize)) return realloc(ptr, nsize);
    void *block = is_small(nsize) ? take_small(c, nsize) : malloc(nsize);
    if (block != NULL) {
        memcpy(block, ptr, osize < nsize ? osize : nsize);
        give_back(c, ptr, osize);
    }
    return block;
}

/* Frees always succeed and shrinking reallocations never fail (Lua relies on both); only a block
   that grows while the limit is enforced can be refused, and Lua answers a refusal with an
   emergency full collection and one retry before it raises "not enough memory". */
static void *cls_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    cls_control *c = ud;
    size_t old = ptr != NULL ? osize : 0; /* for a new block, osize is the kind of object */
    if (nsize == 0) {
        if (ptr != NULL) give_back(c, ptr, osize);
        c->in_use -= old;
        return NULL;
    }
    if (nsize > old && c->enforcing && c->limit != 0) {
        size_t grow = nsize - old;
        if (c->in_use >= c->limit || grow > c->limit - c->in_use) return NULL;
    }
    void *block;
    if (ptr == NULL) {
        block = is_small(nsize) ? take_small(c, nsize) : malloc(nsize);
        if (block == NULL) return NULL;
    } else {
        block = resize(c, ptr, osize, nsize);
        if (block == NULL) {
            if (nsize > old) return NULL;
            block = ptr; /* a failed shrink: the old block is still large enough */
        }
    }
    c->in_use = c->in_use - old + nsize;
    return block;
}

void cls_free_kept_blocks(cls_control *c) {
    for (unsigned k = 0; k < CLS_SMALL_CLASSES; k++) {
        while (c->kept[k] != NULL) {
            void *block = c->kept[k];
            c->kept[k] = *(void **)block;
            free(block);
        }
        c->kept_count[k] = 0;
    }
}

static int cls_panic(lua_State *L) {
    const char *message = lua_tostring(L, -1);
    fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n",
            message != NULL ? message : "error object is not a string");
    fflush(stderr);
    return 0; /* Lua aborts */
}

lua_State *cls_newstate(cls_control *control) {
    lua_State *L = lua_newstate(cls_alloc, control);
    if (L != NULL) {
        lua_atpanic(L, cls_panic);
        lua_setwarnf(L, NULL, NULL); /* warnings (e.g. from `warn`) go nowhere */
    }
    return L;
}

cls_control *cls_control_of(lua_State *L) {
    void *ud = NULL;
    lua_Alloc f = lua_getallocf(L, &ud);
    return f == cls_alloc ? (cls_control *)ud : NULL;
}
