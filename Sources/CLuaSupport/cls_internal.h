#ifndef WSGATE_CLS_INTERNAL_H
#define WSGATE_CLS_INTERNAL_H

/* Shared between the C files of CLuaSupport; not part of the module's public header. */

#include "CLuaSupport.h"

#include <lua.h>
#include <stdint.h>

/* Raises "script timed out after N ms" (prefixed with luaL_where(L, level)) after marking the run
   as timed out and making the count hook fire before every further instruction of L, so a script
   that catches the error cannot go on. Never returns. */
int cls_raise_timeout(lua_State *L, cls_control *c, int level);

/* Replaces find, match, gmatch, gsub and rep in the (still writable) string library table at
   `index` by the deadline-aware versions of patterns.c. */
void cls_install_string_functions(lua_State *L, int index);

/* Replaces resume, wrap and close in the (still writable) coroutine library table at `index` by
   versions that tell the watchdog which thread executes Lua (timeout.c). */
void cls_install_coroutine_functions(lua_State *L, int index);

/* Frees the blocks the allocator keeps for a state's next allocations (allocator.c). */
void cls_free_kept_blocks(cls_control *c);

#endif
