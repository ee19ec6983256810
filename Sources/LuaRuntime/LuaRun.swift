import CLua
import CLuaSupport

/// A script run that is waiting: its coroutine, suspended inside a function made with
/// `cls_push_waiting_function`, and what it has used so far. Resume it with `LuaState.resume`
/// (once the wait is over) or end it with `LuaState.abandon`; either consumes it.
public final class LuaRun {
    /// The run's coroutine: push the values the waiting function returns on it (see `resume`).
    public let thread: OpaquePointer
    fileprivate let threadRef: Int32
    fileprivate let global: LuaState.EventGlobal
    /// The function to call once the chunk is done, if it has not been called yet.
    fileprivate var handler: StaticString?
    /// Time executed in the slices so far.
    public fileprivate(set) var executedNanos: UInt64
    fileprivate var environmentWritten: Int32

    fileprivate init(thread: OpaquePointer, threadRef: Int32, global: LuaState.EventGlobal, handler: StaticString?,
                     executedNanos: UInt64, environmentWritten: Int32) {
        self.thread = thread
        self.threadRef = threadRef
        self.global = global
        self.handler = handler
        self.executedNanos = executedNanos
        self.environmentWritten = environmentWritten
    }
}

extension LuaState {
    /// How a start or a resume left the run.
    public enum RunOutcome {
        /// Done; the error message with its traceback if it failed (see `lastRunTimedOut`), and the
        /// time the run executed (its slices, waits excluded).
        case finished(failure: String?, executedNanos: UInt64)
        /// Waiting: the run's waiting function arranged its resumption.
        case suspended(LuaRun)
    }

    /// Runs the chunk `ref` (from `compile`) in a coroutine, with the environment on top of the stack
    /// (consumed), the one `pushEnvironment(for: global)` made last. With `handler`, a handler-style
    /// script: once the chunk has run, its global function of that name is called with the global's
    /// value. The chunk and the handler share the run's limits: `timeoutNanos` for the time it
    /// executes (across suspensions) and the memory limit.
    ///
    /// When the run succeeded, added no global and left `_G` alone, its environment is kept for
    /// the next run of that kind. Nothing else a script can reach outlives its run (the base is sealed, the
    /// environment's metatable hidden), so such an environment is as fresh as a new one. A run
    /// that is abandoned never gives its environment back.
    public func start(_ ref: Int32, in global: EventGlobal, handler: StaticString? = nil) -> RunOutcome {
        assert(lua_gettop(L) > stackBase, "the environment is on the stack, above the pinned slots")
        let spare = pushedSpare
        let (thread, threadRef) = takeThread()
        lua_xmove(L, thread, 1)
        lua_rawgeti(thread, lua_registryIndex(), lua_Integer(ref))
        lua_pushvalue(thread, 1)
        return proceed(thread, threadRef, global, spare: spare, handler: handler, arguments: 1, executedNanos: 0,
                       environmentWritten: 0, run: nil)
    }

    /// Resumes a suspended run: `push` pushes on `run.thread` the values its waiting function
    /// returns and says how many.
    public func resume(_ run: LuaRun, pushing push: (OpaquePointer) -> Int32) -> RunOutcome {
        let count = push(run.thread)
        return proceed(run.thread, run.threadRef, run.global, spare: false, handler: run.handler, arguments: count,
                       executedNanos: run.executedNanos, environmentWritten: run.environmentWritten, run: run)
    }

    /// Ends a suspended run where it is: its pending to-be-closed variables are closed (within what
    /// is left of its time) and its environment is dropped.
    public func abandon(_ run: LuaRun) {
        let outerExecuting = beginSlice(run.thread, executedNanos: run.executedNanos, now: cls_now_ns())
        let outerThread = control.pointee.run_thread
        control.pointee.run_thread = run.thread
        _ = lua_resetthread(run.thread)
        control.pointee.run_thread = outerThread
        endSlice(run.thread, outerExecuting)
        luaL_unref(L, lua_registryIndex(), run.threadRef)
    }

    /// A finished run's coroutine, or a new one.
    @inline(__always)
    private func takeThread() -> (OpaquePointer, Int32) {
        if let spare = spareThread {
            spareThread = nil
            return spare
        }
        if let spare = spareThreads.popLast() { return spare }
        let thread = lua_newthread(L)!
        return (thread, luaL_ref(L, lua_registryIndex()))
    }

    @inline(__always)
    private func recycle(_ thread: OpaquePointer, _ ref: Int32) {
        if spareThread == nil {
            spareThread = (thread, ref)
        } else if spareThreads.count < 64 {
            // Enough for the runs that are usually in progress at once; the rest are collected.
            spareThreads.append((thread, ref))
        } else {
            luaL_unref(L, lua_registryIndex(), ref)
        }
    }

    /// Resumes `thread`, whose stack is the environment (`spare`: the global's spare environment),
    /// then the function or the waiting function's results (`arguments` values), until the run
    /// finishes or waits.
    private func proceed(_ thread: OpaquePointer, _ threadRef: Int32, _ global: EventGlobal, spare: Bool, handler: StaticString?, arguments: Int32,
                         executedNanos: UInt64, environmentWritten: Int32, run: LuaRun?) -> RunOutcome {
        // Runs nest: the state of the run around this one is put back afterwards.
        let outerWritten = control.pointee.env_written
        let outerThread = control.pointee.run_thread
        control.pointee.env_written = environmentWritten
        control.pointee.run_thread = thread
        let sliceStart = cls_now_ns()
        let outerExecuting = beginSlice(thread, executedNanos: executedNanos, now: sliceStart)
        var handler = handler
        var results: Int32 = 0
        var status = lua_resume(thread, outerThread ?? L, arguments, &results)
        if status == LUA_OK, let name = handler {
            handler = nil
            lua_settop(thread, 1)
            _ = lua_pushlstring(thread, UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self), name.utf8CodeUnitCount)
            if lua_rawget(thread, 1) == LUA_TFUNCTION {
                lua_rawgeti(thread, lua_registryIndex(), lua_Integer(global.nameRef))
                lua_rawget(thread, 1)
                status = lua_resume(thread, outerThread ?? L, 1, &results)
            } else {
                lua_settop(thread, 1)
                lua_pushswift(thread, "the script does not define function \(name)")
                status = LUA_ERRRUN
            }
        }
        let executed = executedNanos + (cls_now_ns() &- sliceStart)
        endSlice(thread, outerExecuting)
        let written = control.pointee.env_written
        control.pointee.env_written = outerWritten
        control.pointee.run_thread = outerThread

        switch status {
        case LUA_YIELD:
            lua_pop(thread, results)
            // The run keeps its environment while it waits.
            if spare { releaseSpare(of: global) }
            guard let run else {
                return .suspended(LuaRun(thread: thread, threadRef: threadRef, global: global, handler: handler,
                                         executedNanos: executed, environmentWritten: written))
            }
            run.handler = handler
            run.executedNanos = executed
            run.environmentWritten = written
            return .suspended(run)
        case LUA_OK:
            lua_settop(thread, 1)
            lua_xmove(thread, L, 1)
            let environment = lua_gettop(L)
            finishEnvironment(at: environment, fresh: written == 0, spare: spare, global: global)
            lua_settop(L, environment - 1)
            recycle(thread, threadRef)
            return .finished(failure: nil, executedNanos: executed)
        default:
            // The coroutine's stack is where the error left it: the traceback starts at the
            // function that raised. A memory error gets none, as from a message handler: there is
            // no memory to spare for it. The environment is not kept: it is out of reach (indexes
            // of a failed coroutine are relative to the function that raised), and failures are rare.
            if spare { releaseSpare(of: global) }
            let message = lua_type(thread, -1) == LUA_TSTRING ? lua_tolstring(thread, -1, nil) : nil
            if status == LUA_ERRMEM {
                lua_pushswift(L, message.map { String(cString: $0) } ?? "not enough memory")
            } else if let message {
                luaL_traceback(L, thread, message, 0)
            } else {
                luaL_traceback(L, thread, "(error object is a \(String(cString: luaL_typename(thread, -1))) value)", 0)
            }
            let failure = lua_swiftstring(L, -1) ?? "error"
            lua_pop(L, 1)

            // Not reused: a coroutine an error ended is dead.
            luaL_unref(L, lua_registryIndex(), threadRef)
            return .finished(failure: failure, executedNanos: executed)
        }
    }

    /// Limits what `thread` does from now: the memory limit, and the run's deadline (what is left of
    /// `timeoutNanos` after `executedNanos`); a run nested in another shares the other's. Returns
    /// the thread that executed Lua before, for `endSlice`.
    @inline(__always)
    private func beginSlice(_ thread: OpaquePointer, executedNanos: UInt64, now: UInt64) -> OpaquePointer? {
        runDepth += 1
        guard runDepth == 1 else { return cls_enter_thread(thread) }
        control.pointee.enforcing = 1
        if timeoutNanos > 0 {
            cls_arm_timeout(thread, now, timeoutNanos > executedNanos ? timeoutNanos - executedNanos : 0, timeoutNanos)
            timeoutArmed = true
        } else {
            control.pointee.timed_out = 0
        }
        return nil
    }

    @inline(__always)
    private func endSlice(_ thread: OpaquePointer, _ outerExecuting: OpaquePointer?) {
        runDepth -= 1
        guard runDepth == 0 else { return cls_leave_thread(thread, outerExecuting) }
        control.pointee.enforcing = 0
        if timeoutArmed {
            cls_disarm_timeout(thread)
            timeoutArmed = false
        }
    }
}
