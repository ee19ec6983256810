#ifndef WSGATE_CLUASUPPORT_H
#define WSGATE_CLUASUPPORT_H

#include <stddef.h>
#include <stdint.h>

/* The parts of the script sandbox that must be C: Lua's variadic functions (lua_gc, luaL_error)
   do not import into Swift, and every Lua error raised here longjmps through C frames only. */

typedef struct lua_State lua_State;

/* The allocator keeps up to CLS_SMALL_KEEP freed blocks of each size class of 16 bytes up to
   16 * CLS_SMALL_CLASSES bytes for the state's next allocations (allocator.c). */
#define CLS_SMALL_CLASSES 16
#define CLS_SMALL_KEEP 128

/* Per-state limits, shared by the allocator (found through lua_getallocf), the timeout's hook and
   the watchdog. The owner reads and writes the fields directly (the state is confined to one
   thread), except those marked as the watchdog's, which only the functions here touch. */
typedef struct cls_control {
    /* Bytes Lua holds right now, as Lua accounts them. */
    size_t in_use;
    /* Growing allocations that would take in_use past this fail (Lua then reports
       "not enough memory"); 0 = unlimited. Applies only while `enforcing` is nonzero. */
    size_t limit;
    int enforcing;
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
    /* The watchdog's: CLOCK_MONOTONIC nanoseconds past which the run in progress is stopped
       (0 = none); the thread executing Lua in it now (the run's coroutine, one the script resumed,
       a nested run's), which the watchdog's signal stops; the kernel id of the thread the run is
       on; whether the watchdog knows the state, and the next state it knows. */
    uint64_t deadline;
    lua_State *executing;
    int tid;
    int watched;
    struct cls_control *watch_next;
    /* The allocator's: freed small blocks by size class, linked through their first word. */
    void *kept[CLS_SMALL_CLASSES];
    uint16_t kept_count[CLS_SMALL_CLASSES];
} cls_control;

/* Zeroes a control block for cls_newstate. */
void cls_control_init(cls_control *control);

/* Makes the watchdog forget a control block and frees the blocks its allocator kept; call once
   its state is closed, before freeing it. */
void cls_control_release(cls_control *control);

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

/* Starts a deadline `remaining_ns` after `start_ns` (cls_now_ns) for the run whose coroutine L
   is. Nothing watches a run that keeps to it: the watchdog thread looks at the deadlines of all
   states every CLS_WATCHDOG_TICK_NS (or at the earliest one) and signals the thread of a run
   past its own, whose handler gives the thread executing Lua there a count hook that raises
   "script timed out after N ms" (N from `timeout_ns`, the whole budget), before every
   instruction from then on. */
void cls_arm_timeout(lua_State *L, uint64_t start_ns, uint64_t remaining_ns, uint64_t timeout_ns);

/* Clears the deadline; the run is over. */
void cls_disarm_timeout(lua_State *L);

/* Lua now executes in L, a run nested in the one in progress (which shares its deadline), until
   cls_leave_thread(L, the value returned). */
lua_State *cls_enter_thread(lua_State *L);
void cls_leave_thread(lua_State *L, lua_State *previous);

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

/* How often the watchdog looks at the deadlines of runs in progress. */
#define CLS_WATCHDOG_TICK_NS 10000000u

#endif
