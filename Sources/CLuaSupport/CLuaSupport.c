#include "CLuaSupport.h"
#include "cls_internal.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* MARK: Functions that wait */

/* Upvalues: 1 = the host's prepare function, 2 = the function's name for errors. */
int cls_may_wait(lua_State *L) {
    cls_control *c = cls_control_of(L);
    return c != NULL && L == c->run_thread && lua_isyieldable(L);
}

/* The prepare function answers at once (n >= 0) or asks to wait (-1); only the second needs the
   run's own thread in a yieldable place, so a call answered at once works anywhere. A wait that
   cannot happen is an error before anything started: the host starts a wait once the run has
   suspended. */
static int waiting_call(lua_State *L) {
    lua_CFunction prepare = lua_tocfunction(L, lua_upvalueindex(1));
    int n = prepare(L);
    if (n >= 0) return n;
    if (n != -1) return lua_error(L);
    cls_control *c = cls_control_of(L);
    if (c == NULL || L != c->run_thread)
        return luaL_error(L, "%s cannot wait inside a coroutine the script created; call it from the script itself",
                          lua_tostring(L, lua_upvalueindex(2)));
    if (!lua_isyieldable(L))
        return luaL_error(L, "%s cannot wait here (inside a metamethod, an iterator or a function called from C)",
                          lua_tostring(L, lua_upvalueindex(2)));
    return lua_yield(L, 0);
}

void cls_push_waiting_function(lua_State *L, int (*prepare)(lua_State *), const char *name) {
    lua_pushcfunction(L, prepare);
    lua_pushstring(L, name);
    lua_pushcclosure(L, waiting_call, 2);
}

/* MARK: Read-only proxies */

static int readonly_newindex(lua_State *L) {
    return luaL_error(L, "attempt to modify read-only table");
}

/* Upvalue 1: the real table. */
static int proxy_next(lua_State *L) {
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 2);
    if (lua_next(L, 3)) return 2;
    lua_pushnil(L);
    return 1;
}

/* Upvalue 1: proxy_next closed over the real table. */
static int proxy_pairs(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

/* Upvalue 1: the real table. */
static int proxy_len(lua_State *L) {
    lua_len(L, lua_upvalueindex(1));
    return 1;
}

/* Whether the table at `idx` has a metatable whose __newindex is the C function `f`: how the
   sandbox recognizes its own read-only proxies and per-run environments. */
static int has_newindex(lua_State *L, int idx, lua_CFunction f) {
    if (!lua_getmetatable(L, idx)) return 0;
    lua_pushliteral(L, "__newindex");
    lua_rawget(L, -2);
    int result = lua_tocfunction(L, -1) == f;
    lua_pop(L, 2);
    return result;
}

static int is_proxy(lua_State *L, int idx) { return has_newindex(L, idx, readonly_newindex); }

/* Pushes a read-only view of the table at `real`: an empty table whose reads go to the real one,
   whose writes raise, and whose metatable scripts can neither read nor replace. */
static void push_proxy(lua_State *L, int real) {
    real = lua_absindex(L, real);
    lua_createtable(L, 0, 0);
    lua_createtable(L, 0, 5);
    lua_pushvalue(L, real);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, real);
    lua_pushcclosure(L, proxy_next, 1);
    lua_pushcclosure(L, proxy_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushvalue(L, real);
    lua_pushcclosure(L, proxy_len, 1);
    lua_setfield(L, -2, "__len");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

static void push_sealed(lua_State *L, int idx, int visited);

/* Replaces every table value of the table at `t` by its read-only proxy. */
static void seal_fields(lua_State *L, int t, int visited) {
    luaL_checkstack(L, 8, "tables nested too deeply to seal");
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -1) == LUA_TTABLE && !is_proxy(L, -1)) {
            push_sealed(L, lua_gettop(L), visited);
            lua_pushvalue(L, -3); /* key */
            lua_insert(L, -2);
            lua_rawset(L, t); /* assigning an existing field during traversal is allowed */
        }
        lua_pop(L, 1);
    }
}

/* Pushes the proxy for the table at `idx`, sealing what it holds first. `visited` maps real
   tables to their proxies, so shared and cyclic tables get one proxy each. */
static void push_sealed(lua_State *L, int idx, int visited) {
    idx = lua_absindex(L, idx);
    if (is_proxy(L, idx)) {
        lua_pushvalue(L, idx);
        return;
    }
    lua_pushvalue(L, idx);
    if (lua_rawget(L, visited) != LUA_TNIL) return;
    lua_pop(L, 1);
    push_proxy(L, idx);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, visited);
    seal_fields(L, idx, visited);
}

int cls_seal_globals(lua_State *L) {
    lua_pushglobaltable(L);
    int globals = lua_gettop(L);
    lua_newtable(L);
    int visited = lua_gettop(L);
    /* The globals stay writable for the host and reachable for scripts only through each run's
       environment (whose metatable is hidden); `_G` inside them becomes the proxy. */
    push_sealed(L, globals, visited);
    return 0;
}

int cls_seal_value(lua_State *L) {
    lua_settop(L, 1);
    if (lua_type(L, 1) != LUA_TTABLE) return 1;
    lua_newtable(L);
    push_sealed(L, 1, 2);
    return 1;
}

/* MARK: Per-run environments */

/* __newindex of per-run environments: a new global. The owner learns that the environment is no
   longer fresh without looking through it. */
static void note_environment_written(lua_State *L) {
    cls_control *c = cls_control_of(L);
    if (c) c->env_written = 1;
}

static int environment_newindex(lua_State *L) {
    note_environment_written(L);
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 0;
}

/* MARK: Sandboxed base functions */

static int sandbox_rawset(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    if (is_proxy(L, 1)) return luaL_error(L, "attempt to modify read-only table");
    if (has_newindex(L, 1, environment_newindex)) note_environment_written(L);
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

/* Like the standard one, but refuses finalizers: a __gc metamethod could run Lua code at any later
   allocation, outside the run that created it and so outside its deadline and memory limit. */
static int sandbox_setmetatable(lua_State *L) {
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL) return luaL_error(L, "__gc metamethods are not allowed in scripts");
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

static int sandbox_collectgarbage(lua_State *L) {
    static const char *const options[] = {"collect", "count", "step", "isrunning", NULL};
    const char *name = luaL_optstring(L, 1, "collect");
    int option = 0;
    while (options[option] != NULL && strcmp(options[option], name) != 0) option++;
    if (options[option] == NULL)
        return luaL_error(L, "collectgarbage option '%s' is not allowed in scripts", name);
    int result;
    switch (option) {
    case 0:
        result = lua_gc(L, LUA_GCCOLLECT);
        if (result == -1) break;
        lua_pushinteger(L, result);
        return 1;
    case 1: {
        int kilobytes = lua_gc(L, LUA_GCCOUNT);
        int remainder = lua_gc(L, LUA_GCCOUNTB);
        if (kilobytes == -1) break;
        lua_pushnumber(L, (lua_Number)kilobytes + ((lua_Number)remainder / 1024));
        return 1;
    }
    case 2:
        result = lua_gc(L, LUA_GCSTEP, (int)luaL_optinteger(L, 2, 0));
        if (result == -1) break;
        lua_pushboolean(L, result);
        return 1;
    default:
        result = lua_gc(L, LUA_GCISRUNNING);
        if (result == -1) break;
        lua_pushboolean(L, result);
        return 1;
    }
    lua_pushboolean(L, 0); /* the collector is busy (called from a finalizer) */
    return 1;
}

/* Pushes the _ENV of the Lua function that called the running C function; 0 when there is none
   (called from C, or a function that uses no globals). */
static int push_caller_env(lua_State *L) {
    lua_Debug ar;
    if (!lua_getstack(L, 1, &ar) || !lua_getinfo(L, "f", &ar)) return 0;
    if (!lua_iscfunction(L, -1)) {
        /* A script's own body has its environment as a parameter named _ENV (see LuaState.compile);
           functions it defines have it as an upvalue. */
        for (int i = 1;; i++) {
            const char *name = lua_getlocal(L, &ar, i);
            if (name == NULL) break;
            if (strcmp(name, "_ENV") == 0) {
                lua_remove(L, -2);
                return 1;
            }
            lua_pop(L, 1);
        }
        for (int i = 1;; i++) {
            const char *name = lua_getupvalue(L, -1, i);
            if (name == NULL) break;
            if (strcmp(name, "_ENV") == 0) {
                lua_remove(L, -2);
                return 1;
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return 0;
}

/* load(chunk [, chunkname [, mode [, env]]]) with the mode forced to text. Without an env argument
   the chunk gets the caller's _ENV (as with the standard load inside one run), or else a fresh
   environment over the base globals: never the shared globals table itself.
   Upvalues: 1 = the standard load, 2 = the per-run environment metatable. */
static int sandbox_load(lua_State *L) {
    int nargs = lua_gettop(L);
    if (lua_type(L, 1) != LUA_TFUNCTION && !lua_isstring(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_optstring(L, 2, NULL);
    lua_settop(L, 4);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, "t");
    if (nargs >= 4) {
        lua_pushvalue(L, 4);
    } else if (!push_caller_env(L)) {
        lua_createtable(L, 0, 0);
        lua_pushvalue(L, lua_upvalueindex(2));
        lua_setmetatable(L, -2);
    }
    lua_call(L, 4, LUA_MULTRET);
    return lua_gettop(L) - 4;
}

/* MARK: Setup */

int cls_open_sandbox(lua_State *L) {
    static const luaL_Reg libraries[] = {
        {LUA_GNAME, luaopen_base},        {LUA_COLIBNAME, luaopen_coroutine},
        {LUA_TABLIBNAME, luaopen_table},  {LUA_OSLIBNAME, luaopen_os},
        {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},  {NULL, NULL},
    };
    for (const luaL_Reg *library = libraries; library->func != NULL; library++) {
        luaL_requiref(L, library->name, library->func, 1);
        lua_pop(L, 1);
    }
    /* Every event makes a few short-lived tables: the generational collector suits that best. */
    lua_gc(L, LUA_GCGEN, 0, 0);

    lua_pushglobaltable(L);
    int globals = lua_gettop(L);
    lua_pushnil(L);
    lua_setfield(L, globals, "dofile");
    lua_pushnil(L);
    lua_setfield(L, globals, "loadfile");

    /* os keeps only what reads the clock. */
    static const char *const osKept[] = {"time", "clock", "date", "difftime", NULL};
    lua_getfield(L, globals, "os");
    lua_createtable(L, 0, 4);
    for (const char *const *name = osKept; *name != NULL; name++) {
        lua_getfield(L, -2, *name);
        lua_setfield(L, -2, *name);
    }
    lua_setfield(L, globals, "os");
    lua_pop(L, 1);

    lua_getfield(L, globals, "coroutine");
    cls_install_coroutine_functions(L, lua_gettop(L));
    lua_pop(L, 1);

    lua_getfield(L, globals, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    /* Pattern matching that observes the deadline (the timeout's hook cannot interrupt a single C
       call), and a bounded string.rep. Done before sealing; string methods find them too, since
       the string metatable's __index is this same table. */
    cls_install_string_functions(L, lua_gettop(L));
    lua_pop(L, 1);

    /* Method calls on strings keep using the real string table; getmetatable("") no longer
       hands it out. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    /* Metatable of per-run environments: reads fall back to the globals, new globals are noted;
       hidden from scripts. */
    lua_createtable(L, 0, 3);
    int envMetatable = lua_gettop(L);
    lua_pushvalue(L, globals);
    lua_setfield(L, envMetatable, "__index");
    lua_pushcfunction(L, environment_newindex);
    lua_setfield(L, envMetatable, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, envMetatable, "__metatable");

    lua_getfield(L, globals, "load");
    lua_pushvalue(L, envMetatable);
    lua_pushcclosure(L, sandbox_load, 2);
    lua_setfield(L, globals, "load");
    lua_pushcfunction(L, sandbox_collectgarbage);
    lua_setfield(L, globals, "collectgarbage");
    lua_pushcfunction(L, sandbox_rawset);
    lua_setfield(L, globals, "rawset");
    lua_pushcfunction(L, sandbox_setmetatable);
    lua_setfield(L, globals, "setmetatable");

    lua_pushcfunction(L, cls_seal_globals);
    lua_call(L, 0, 0);

    lua_pushvalue(L, envMetatable);
    return 1;
}
