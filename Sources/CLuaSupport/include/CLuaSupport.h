#ifndef WSGATE_CLUASUPPORT_H
#define WSGATE_CLUASUPPORT_H

#include <stddef.h>
#include <stdint.h>

/* The parts of the script sandbox that must be C: Lua's variadic functions (lua_gc, luaL_error)
   do not import into Swift, and every Lua error raised here longjmps through C frames only. */

typedef struct lua_State lua_State;

/* Per-state limits, shared by the allocator (found through lua_getallocf) and the count hook.
   The owner reads and writes the fields directly; the state is confined to one thread. */
typedef struct cls_control {
    /* Bytes Lua holds right now, as Lua accounts them. */
    size_t in_use;
    /* Growing allocations that would take in_use past this fail (Lua then reports
       "not enough memory"); 0 = unlimited. Applies only while `enforcing` is nonzero. */
    size_t limit;
    int enforcing;
    /* CLOCK_MONOTONIC nanoseconds after which the count hook raises; 0 = none. */
    uint64_t deadline;
    /* The timeout the deadline was set from, for the error message. */
    uint64_t timeout_ns;
    /* Set when the hook raised the timeout error since the deadline was armed. */
    int timed_out;
    /* Set when a script adds a key to a per-run environment (an assignment to a new global, or
       rawset on one); the owner clears it. */
    int env_written;
    /* The coroutine of the run executing now (NULL between runs): the only thread a waiting
       function may suspend. */
    lua_State *run_thread;
} cls_control;

/* A new state whose allocator counts into `control` (which must outlive the state), with a panic
   handler that reports to stderr and Lua warnings off. NULL when the first allocation fails. */
lua_State *cls_newstate(cls_control *control);

/* The control block of a state made by cls_newstate, or NULL for any other state. */
cls_control *cls_control_of(lua_State *L);

/* lua_CFunction, to be called through lua_pcall once on a fresh state: opens base, string, table,
   math, utf8, coroutine and a reduced os; wraps load, collectgarbage, rawset and setmetatable;
   hides the string metatable; switches the collector to generational mode; seals the library
   tables. Returns the metatable for per-run environments. */
int cls_open_sandbox(lua_State *L);

/* lua_CFunction, to be called through lua_pcall: replaces every table reachable from the
   globals (except the globals table itself) by a read-only proxy. Idempotent. */
int cls_seal_globals(lua_State *L);

/* lua_CFunction for lua_pcall with one argument: seals that table (if it is one) and returns the
   read-only proxy, or the value itself when it is not a table. */
int cls_seal_value(lua_State *L);

/* Starts a deadline `remaining_ns` after `start_ns` (cls_now_ns): installs a count hook on L that
   raises "script timed out after N ms" (N from `timeout_ns`, the whole budget) once it passes,
   and at every instruction from then on. */
void cls_arm_timeout(lua_State *L, uint64_t start_ns, uint64_t remaining_ns, uint64_t timeout_ns);

/* Gives the thread L the count hook of the deadline armed now (for a run nested in another,
   which shares its deadline), or removes L's hook when none is armed. */
void cls_hook_thread(lua_State *L);

/* Clears the deadline and removes the hook from L. */
void cls_disarm_timeout(lua_State *L);

/* The deadline armed now in CLOCK_MONOTONIC nanoseconds (0 = none), and the clock. */
uint64_t cls_deadline(lua_State *L);
uint64_t cls_now_ns(void);

/* Pushes a function for scripts named `name` that may wait: it calls `prepare` (a plain C call,
   with the script's arguments) on the run's coroutine. `prepare` returns the number of results
   it pushed to answer at once, -1 after arranging for the run to be resumed later (the run's
   coroutine then yields, and the values it is resumed with are the function's results), or -2
   to raise the error object it pushed (a bad argument). A call that has to wait outside the
   run's own coroutine (in a coroutine the script made, a metamethod or iterator called from C)
   raises an error saying so; one answered at once works anywhere. `prepare` must not raise Lua
   errors. */
void cls_push_waiting_function(lua_State *L, int (*prepare)(lua_State *), const char *name);

/* Whether a waiting function called on `L` now may wait (see above). */
int cls_may_wait(lua_State *L);

/* Instructions between two deadline checks. */
#define CLS_HOOK_COUNT 1000

#endif
