#ifndef LUASHIM_H
#define LUASHIM_H
/* The one small place where Lua's C API meets Swift.
 *
 * Rule: Lua errors are longjmps. They must never unwind through a Swift
 * frame. So Swift functions exposed to Lua never call lua_error: they return
 * a negative count with the error value on the stack and the C trampoline
 * below raises it after the Swift frame is gone. Swift only calls API
 * functions that cannot raise (raw access, pushes) and enters Lua only
 * through baton_pcall. Allocation failures are the remaining way an API call
 * can raise: the allocator never fails while Swift code is running (see
 * baton_newstate), only while Lua code runs. */
#include <lua5.4/lua.h>
#include <lua5.4/lauxlib.h>
#include <lua5.4/lualib.h>
#include <stddef.h>

/* Swift functions. dispatch(L, ctx) returns >= 0 results, or -1 with the
 * error value on top of the stack. */
typedef int (*baton_dispatch_fn)(lua_State *L, void *ctx);

/* A state whose Lua allocations fail past `limit` bytes (0: no limit), whose
 * Swift functions are run by `dispatch`. Its context (allocator counters, the
 * dispatcher, the abort request) is per state. Close it with baton_closestate. */
lua_State *baton_newstate(size_t limit, baton_dispatch_fn dispatch);
void baton_closestate(lua_State *L);
size_t baton_memory_used(lua_State *L);
size_t baton_memory_limit(lua_State *L);
void baton_set_memory_limit(lua_State *L, size_t limit);

void baton_pushswiftfunction(lua_State *L, void *ctx);

/* lua_pcall with a message handler that records a traceback in the registry
 * field "baton.traceback"; the error value itself is left unchanged. */
int baton_pcall(lua_State *L, int nargs, int nresults);
/* Text chunks only: binary chunks are refused. */
int baton_loadbuffer(lua_State *L, const char *buf, size_t len, const char *chunkname);

/* The kill switch. Once requested (from a signal handler, os.exit or a
 * cancel), a hook makes every Lua instruction raise, so a recipe's own
 * pcall cannot swallow the interruption. reason: a signal number, or
 * BATON_ABORT_EXIT for os.exit. */
#define BATON_ABORT_EXIT 1000
void baton_abort_request(lua_State *L, int reason);   /* async-signal-safe */
int  baton_abort_reason(lua_State *L);
void baton_abort_clear(lua_State *L);
/* Connect CBatonSys's signal handler: a signal requests an abort of every live state. */
void baton_abort_on_signals(int enabled);

/* Replaces the function on top of the stack (a writer taking one string) with `print`, a C
 * function as stock Lua's: luaL_tolstring on each value, tab-separated, then the writer. */
void baton_push_print(lua_State *L);
#define BATON_ABORT_MESSAGE "interrupted"

/* luaL_where(L, level): "file:line:" of the Lua code at that level. */
void baton_where(lua_State *L, int level);

/* Macros, as functions. */
static inline void baton_pop(lua_State *L, int n) { lua_pop(L, n); }
static inline void baton_newtable(lua_State *L) { lua_newtable(L); }
static inline int baton_upvalueindex(int i) { return lua_upvalueindex(i); }
static inline int baton_registryindex(void) { return LUA_REGISTRYINDEX; }
static inline const char *baton_tolstring(lua_State *L, int i, size_t *len) { return lua_tolstring(L, i, len); }
static inline int baton_isinteger(lua_State *L, int i) { return lua_isinteger(L, i); }
static inline lua_Integer baton_tointeger(lua_State *L, int i) { return lua_tointegerx(L, i, NULL); }
static inline lua_Number baton_tonumber(lua_State *L, int i) { return lua_tonumberx(L, i, NULL); }
static inline void baton_insert(lua_State *L, int i) { lua_insert(L, i); }
static inline void baton_remove(lua_State *L, int i) { lua_remove(L, i); }
static inline void baton_replace(lua_State *L, int i) { lua_replace(L, i); }
static inline void baton_pushcfunction(lua_State *L, lua_CFunction f) { lua_pushcfunction(L, f); }
/* registry[k], raw: no metamethod runs (the registry is reachable from Lua through debug). */
static inline int baton_getregistryfield(lua_State *L, const char *k) {
    lua_pushstring(L, k);
    return lua_rawget(L, LUA_REGISTRYINDEX);
}
static inline void baton_pushglobaltable(lua_State *L) { lua_pushglobaltable(L); }
static inline void *baton_pushnulsentinel(lua_State *L) { static char k; lua_pushlightuserdata(L, &k); return &k; }

#endif
