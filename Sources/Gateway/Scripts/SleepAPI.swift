import CLua
import CLuaSupport
import LuaRuntime

extension ScriptAPI {
    /// `sleep(ms)`: the run waits that long while the loop serves everything else; `sleep(0)` lets
    /// the loop serve what is ready before the run goes on.
    static func installSleep(in lua: LuaState) {
        lua.setBaseGlobal("sleep") { cls_push_waiting_function(lua.L, sleep, "sleep") }
    }

    /// The longest sleep: a day (scripts.waitTimeoutMs ends most runs long before).
    private static let longestSleepMs = 86_400_000.0

    private static let sleep: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let ms = lua_type(L, 1) == LUA_TNUMBER ? lua_tonumberx(L, 1, nil) : -1
            guard ms >= 0 else {
                lua_pushswift(L, "bad argument #1 to 'sleep' (milliseconds expected, 0 or more)")
                return -2
            }
            let worker = worker(L)
            let nanos = UInt64(min(ms, longestSleepMs) * 1_000_000)
            worker.runner.suspendRun(L) { [unowned worker] run, wait in
                worker.loop.schedule(after: nanos) { [weak run] in
                    guard let run else { return }
                    worker.runner.resume(run, wait: wait) { _ in 0 }
                }
            }
            return -1
        }
    }
}
