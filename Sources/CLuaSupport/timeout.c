/* The deadline of a run, kept by a watchdog thread instead of a count hook.

   Why: a count hook makes Lua 5.4 trap every VM instruction (luaG_traceexec) for as long as it is
   set, which cost a small script's run about a tenth of its time. Here a run pays two stores: its
   deadline and the thread executing it. One watchdog thread per process looks at every state's
   deadline each CLS_WATCHDOG_TICK_NS; when a run is past its own, it signals that run's thread,
   whose handler sets the hook there (lua_sethook may be called from a signal handler: lua.c stops
   a script on Ctrl-C that way). The hook then raises the timeout error at the next instruction,
   and at every one after, so that a script catching it cannot go on.

   The hook goes on the thread executing Lua at that moment. Besides the run's own coroutine that
   is a coroutine the script resumed (tracked by wrapping coroutine.resume, wrap and close) or a
   run nested in it (cls_enter_thread). When Lua switches back from a thread that timed out, the
   thread it returns to gets the hook too.

   The watchdog sleeps once no run has been in progress for CLS_WATCHDOG_QUIET_TICKS; the next
   run to start wakes it, so an idle gateway is never woken. */

#define _GNU_SOURCE /* gettid, SIGRTMIN, tgkill via syscall */

#include "CLuaSupport.h"
#include "cls_internal.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CLS_WATCHDOG_QUIET_TICKS 100
#define CLS_WATCHDOG_SIGNAL (SIGRTMIN + 2)

uint64_t cls_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static cls_control *control_of(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

/* MARK: The hook */

/* 0: not started, 1: running, -1: could not start (runs then fall back on a count hook). */
static int watchdog_state;

static void cls_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    cls_control *c = control_of(L);
    uint64_t deadline = c->deadline;
    if (deadline == 0) {
        /* Inherited by a coroutine that outlived its run. */
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    if (cls_now_ns() < deadline) {
        /* Set by a signal that came late (the run it was for had ended), unless it is the count
           hook the runs fall back on without a watchdog. */
        if (watchdog_state > 0) lua_sethook(L, NULL, 0, 0);
        return;
    }
    cls_raise_timeout(L, c, 0);
}

int cls_raise_timeout(lua_State *L, cls_control *c, int level) {
    /* From now on fire before every instruction of this thread, so a script that catches the error
       with pcall cannot run a single further instruction: every level unwinds in turn. */
    lua_sethook(L, cls_hook, LUA_MASKCOUNT, 1);
    c->timed_out = 1;
    luaL_where(L, level);
    lua_pushfstring(L, "script timed out after %I ms", (lua_Integer)(c->timeout_ns / 1000000u));
    lua_concat(L, 2);
    return lua_error(L);
}

/* MARK: The watchdog */

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t watch_wake;
static cls_control *watched_list;
/* The watchdog sleeps until a run starts. */
static int watchdog_idle;

/* The control whose run is in progress on this thread, for the signal handler. Initial-exec: the
   module is linked into the executable, and the handler must not allocate a TLS block. */
static __thread cls_control *armed_here __attribute__((tls_model("initial-exec")));
static __thread int tid_here __attribute__((tls_model("initial-exec")));

static void on_watchdog_signal(int signal) {
    (void)signal;
    int saved = errno;
    cls_control *c = armed_here;
    if (c != NULL) {
        uint64_t deadline = __atomic_load_n(&c->deadline, __ATOMIC_RELAXED);
        lua_State *executing = __atomic_load_n(&c->executing, __ATOMIC_RELAXED);
        if (deadline != 0 && executing != NULL && cls_now_ns() >= deadline)
            lua_sethook(executing, cls_hook, LUA_MASKCOUNT, 1);
    }
    errno = saved;
}

static int any_run_in_progress(void) {
    for (cls_control *c = watched_list; c != NULL; c = c->watch_next)
        if (__atomic_load_n(&c->deadline, __ATOMIC_SEQ_CST) != 0) return 1;
    return 0;
}

static void *watchdog_main(void *unused) {
    (void)unused;
    pthread_mutex_lock(&watch_lock);
    int quiet = 0;
    for (;;) {
        uint64_t now = cls_now_ns();
        uint64_t wake = now + CLS_WATCHDOG_TICK_NS;
        int active = 0;
        for (cls_control *c = watched_list; c != NULL; c = c->watch_next) {
            uint64_t deadline = __atomic_load_n(&c->deadline, __ATOMIC_SEQ_CST);
            if (deadline == 0) continue;
            active = 1;
            if (now >= deadline) {
                /* Sent again every tick until the run ends: a signal that came while the thread
                   was switching coroutines may have hooked the one it left. A thread that has
                   exited meanwhile makes this fail with ESRCH. */
                syscall(SYS_tgkill, getpid(), __atomic_load_n(&c->tid, __ATOMIC_RELAXED), CLS_WATCHDOG_SIGNAL);
            } else if (deadline < wake) {
                wake = deadline;
            }
        }
        if (active) {
            quiet = 0;
        } else if (++quiet >= CLS_WATCHDOG_QUIET_TICKS) {
            quiet = 0;
            /* Announce the sleep, then look once more: a run armed before the announcement was
               seen either here or by its owner, which wakes the watchdog (cls_arm_timeout). */
            __atomic_store_n(&watchdog_idle, 1, __ATOMIC_SEQ_CST);
            if (any_run_in_progress()) {
                __atomic_store_n(&watchdog_idle, 0, __ATOMIC_SEQ_CST);
                continue;
            }
            while (__atomic_load_n(&watchdog_idle, __ATOMIC_SEQ_CST)) pthread_cond_wait(&watch_wake, &watch_lock);
            continue;
        }
        struct timespec until = {.tv_sec = (time_t)(wake / 1000000000u), .tv_nsec = (long)(wake % 1000000000u)};
        pthread_cond_timedwait(&watch_wake, &watch_lock, &until);
    }
    return NULL;
}

/* With watch_lock held. */
static void start_watchdog(void) {
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&watch_wake, &attributes);
    pthread_condattr_destroy(&attributes);

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_watchdog_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    pthread_t thread;
    pthread_attr_t thread_attributes;
    pthread_attr_init(&thread_attributes);
    pthread_attr_setdetachstate(&thread_attributes, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&thread_attributes, 64 * 1024);
    /* The watchdog itself never takes the signal. */
    sigset_t blocked, previous;
    sigemptyset(&blocked);
    sigaddset(&blocked, CLS_WATCHDOG_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &blocked, &previous);
    if (sigaction(CLS_WATCHDOG_SIGNAL, &action, NULL) == 0 &&
        pthread_create(&thread, &thread_attributes, watchdog_main, NULL) == 0) {
        watchdog_state = 1;
    } else {
        fprintf(stderr, "cannot start the script watchdog (%s): script deadlines fall back on a count hook\n", strerror(errno));
        watchdog_state = -1;
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    pthread_attr_destroy(&thread_attributes);
}

static void watch(cls_control *c) {
    pthread_mutex_lock(&watch_lock);
    if (watchdog_state == 0) start_watchdog();
    c->watch_next = watched_list;
    watched_list = c;
    c->watched = 1;
    pthread_mutex_unlock(&watch_lock);
}

void cls_control_init(cls_control *control) { memset(control, 0, sizeof *control); }

void cls_control_release(cls_control *control) {
    cls_free_kept_blocks(control);
    if (!control->watched) return;
    pthread_mutex_lock(&watch_lock);
    for (cls_control **link = &watched_list; *link != NULL; link = &(*link)->watch_next) {
        if (*link == control) {
            *link = control->watch_next;
            break;
        }
    }
    control->watched = 0;
    pthread_mutex_unlock(&watch_lock);
}

/* MARK: Runs */

void cls_arm_timeout(lua_State *L, uint64_t start_ns, uint64_t remaining_ns, uint64_t timeout_ns) {
    cls_control *c = control_of(L);
    if (!c->watched) watch(c);
    if (tid_here == 0) tid_here = (int)gettid();
    c->timeout_ns = timeout_ns;
    c->timed_out = 0;
    __atomic_store_n(&c->tid, tid_here, __ATOMIC_RELAXED);
    __atomic_store_n(&c->executing, L, __ATOMIC_RELAXED);
    armed_here = c;
    /* Sequentially consistent with the watchdog's announcement that it sleeps (see watchdog_main):
       either it sees this deadline or this thread sees it asleep. */
    __atomic_store_n(&c->deadline, start_ns + remaining_ns, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&watchdog_idle, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&watch_lock);
        __atomic_store_n(&watchdog_idle, 0, __ATOMIC_SEQ_CST);
        pthread_cond_signal(&watch_wake);
        pthread_mutex_unlock(&watch_lock);
    }
    if (watchdog_state < 0) lua_sethook(L, cls_hook, LUA_MASKCOUNT, 1000);
}

void cls_disarm_timeout(lua_State *L) {
    cls_control *c = control_of(L);
    __atomic_store_n(&c->deadline, 0, __ATOMIC_RELAXED);
    armed_here = NULL;
    __atomic_store_n(&c->executing, NULL, __ATOMIC_RELAXED);
}

lua_State *cls_enter_thread(lua_State *L) {
    cls_control *c = control_of(L);
    lua_State *previous = c->executing;
    __atomic_store_n(&c->executing, L, __ATOMIC_RELAXED);
    if (watchdog_state < 0 && c->deadline != 0) lua_sethook(L, cls_hook, LUA_MASKCOUNT, 1000);
    return previous;
}

void cls_leave_thread(lua_State *L, lua_State *previous) {
    cls_control *c = control_of(L);
    __atomic_store_n(&c->executing, previous, __ATOMIC_RELAXED);
    /* What timed out there ends here too: the caller may have caught the error. */
    if (c->timed_out && previous != NULL) lua_sethook(previous, cls_hook, LUA_MASKCOUNT, 1);
}

/* MARK: Coroutines the script resumes */

/* Calls the function below its `nargs` arguments at the bottom of the stack with Lua executing in
   `co` meanwhile; its errors pass through once `executing` is put back. */
static int call_switching_to(lua_State *L, lua_State *co, int nargs) {
    lua_State *previous = cls_enter_thread(co);
    int status = lua_pcall(L, nargs, LUA_MULTRET, 0);
    cls_leave_thread(co, previous);
    if (status != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

/* coroutine.resume and coroutine.close; upvalue 1: the standard function. */
static int switching_call(lua_State *L) {
    int nargs = lua_gettop(L);
    lua_State *co = lua_tothread(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    if (co == NULL) { /* the standard function raises its own error */
        lua_call(L, nargs, LUA_MULTRET);
        return lua_gettop(L);
    }
    return call_switching_to(L, co, nargs);
}

/* What coroutine.wrap returns; upvalues: the standard wrap's function, its coroutine. */
static int switching_wrapped(lua_State *L) {
    int nargs = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    return call_switching_to(L, lua_tothread(L, lua_upvalueindex(2)), nargs);
}

/* coroutine.wrap; upvalue 1: the standard one. */
static int switching_wrap(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    /* The standard wrap's function is a C closure over the coroutine. */
    if (lua_getupvalue(L, 1, 1) == NULL || !lua_isthread(L, -1))
        return luaL_error(L, "coroutine.wrap: unexpected function from the Lua library");
    lua_pushcclosure(L, switching_wrapped, 2);
    return 1;
}

void cls_install_coroutine_functions(lua_State *L, int index) {
    static const char *const switching[] = {"resume", "close"};
    for (size_t i = 0; i < sizeof switching / sizeof switching[0]; i++) {
        lua_getfield(L, index, switching[i]);
        lua_pushcclosure(L, switching_call, 1);
        lua_setfield(L, index, switching[i]);
    }
    lua_getfield(L, index, "wrap");
    lua_pushcclosure(L, switching_wrap, 1);
    lua_setfield(L, index, "wrap");
}
