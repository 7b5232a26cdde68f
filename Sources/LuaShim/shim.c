#include "LuaShim.h"
#include "CBatonSys.h"
#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* ---- per-state context ----
 * Everything the shim keeps about a state lives in one struct, the allocator's
 * userdata (reached with lua_getallocf), as mpv keeps its context per state:
 * the bounded allocator's counters, the Swift dispatcher, the abort request.
 * `native` counts how deep we are in Swift code called from Lua; while it
 * is non-zero allocations succeed (up to a hard margin), so a push from
 * Swift never raises LUA_ERRMEM across a Swift frame. */
typedef struct baton_alloc_state {
    size_t used;
    size_t limit;
    int native;
    baton_dispatch_fn dispatch;
    volatile sig_atomic_t abort_reason;
    lua_State *L;
    int closing;   /* lua_close is running __gc metamethods: Swift is going away, call none */
} baton_alloc_state;

#define NATIVE_MARGIN ((size_t)256 << 20)

static void *baton_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    baton_alloc_state *st = (baton_alloc_state *)ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        st->used -= old;
        return NULL;
    }
    if (st->limit && nsize > old) {
        size_t grow = nsize - old;
        size_t cap = st->native ? st->limit + NATIVE_MARGIN : st->limit;
        if (st->used + grow > cap) return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p) st->used = st->used - old + nsize;
    return p;
}

/* The states a signal interrupts. A signal handler has no argument to find a
 * state by, so this list is the one piece of process-wide state here; a state
 * joins it when made and leaves it when closed. */
#define MAX_STATES 16
static baton_alloc_state *volatile live_states[MAX_STATES];

lua_State *baton_newstate(size_t limit, baton_dispatch_fn dispatch) {
    baton_alloc_state *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->limit = limit;
    st->dispatch = dispatch;
    lua_State *L = lua_newstate(baton_alloc, st);
    if (!L) { free(st); return NULL; }
    st->L = L;
    for (int i = 0; i < MAX_STATES; i++) if (!live_states[i]) { live_states[i] = st; break; }
    return L;
}

static baton_alloc_state *alloc_state(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return (baton_alloc_state *)ud;
}

void baton_closestate(lua_State *L) {
    baton_alloc_state *st = alloc_state(L);
    for (int i = 0; i < MAX_STATES; i++) if (live_states[i] == st) live_states[i] = NULL;
    st->closing = 1;
    lua_close(L);
    free(st);
}
size_t baton_memory_used(lua_State *L) { return alloc_state(L)->used; }
size_t baton_memory_limit(lua_State *L) { return alloc_state(L)->limit; }
void baton_set_memory_limit(lua_State *L, size_t limit) { alloc_state(L)->limit = limit; }

static void abort_hook(lua_State *L, lua_Debug *ar);

/* ---- the trampoline ---- */
static int trampoline(lua_State *L) {
    void *ctx = lua_touserdata(L, lua_upvalueindex(1));
    baton_alloc_state *st = alloc_state(L);
    if (st->closing) return 0;
    st->native++;
    int n = st->dispatch(L, ctx);
    st->native--;
    /* An abort requested while this thread (perhaps a coroutine the request's hook never
     * reached) was in Swift: arm the kill switch here too. */
    if (st->abort_reason && lua_gethook(L) != abort_hook)
        lua_sethook(L, abort_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    if (n < 0) return lua_error(L); /* only C frames below us now */
    return n;
}

void baton_pushswiftfunction(lua_State *L, void *ctx) {
    lua_pushlightuserdata(L, ctx);
    lua_pushcclosure(L, trampoline, 1);
}

/* ---- protected calls ---- */
static int msgh(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg && lua_type(L, 1) == LUA_TTABLE) {
        lua_pushliteral(L, "message");    /* a Baton error table (raw: no metamethod runs here) */
        lua_rawget(L, 1);
        msg = lua_tostring(L, -1);
    }
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    lua_pushliteral(L, "baton.traceback");
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);   /* raw, like every registry access of ours */
    lua_settop(L, 1);
    return 1;
}

int baton_pcall(lua_State *L, int nargs, int nresults) {
    baton_alloc_state *st = alloc_state(L);
    int saved = st->native;
    int base = lua_gettop(L) - nargs;   /* the function's slot */
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    st->native = 0;                     /* Lua code runs: allocations may fail */
    int status = lua_pcall(L, nargs, nresults, base);
    st->native = saved;
    lua_remove(L, base);
    return status;
}

int baton_loadbuffer(lua_State *L, const char *buf, size_t len, const char *chunkname) {
    return luaL_loadbufferx(L, buf, len, chunkname, "t");
}

/* "file:line: " of the nearest Lua code at or above `level` (a primitive called through
 * pcall or in a tail call has no line at level 1). Pushes "" when there is none. */
void baton_where(lua_State *L, int level) {
    lua_Debug ar;
    for (int l = level; l < level + 20 && lua_getstack(L, l, &ar); l++) {
        lua_getinfo(L, "Sl", &ar);
        /* Baton's own Lua (chunks named "=baton...", e.g. parallel's runStage) is not where
         * the recipe made its mistake: look further up. */
        if (ar.source[0] == '=' && strncmp(ar.source + 1, "baton", 5) == 0) continue;
        if (ar.currentline > 0) {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
    lua_pushliteral(L, "");
}

/* ---- the kill switch ---- */
static void abort_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    baton_stuck_guard_ack();   /* Lua runs again: the stuck guard need not act */
    lua_pushstring(L, BATON_ABORT_MESSAGE);
    lua_error(L);
}

static void request(baton_alloc_state *st, int reason) {
    if (!st->abort_reason) st->abort_reason = reason;
    lua_sethook(st->L, abort_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void baton_abort_request(lua_State *L, int reason) { request(alloc_state(L), reason); }

int baton_abort_reason(lua_State *L) { return alloc_state(L)->abort_reason; }

void baton_abort_clear(lua_State *L) {
    alloc_state(L)->abort_reason = 0;
    lua_sethook(L, NULL, 0, 0);
}

/* lua_sethook is async-signal-safe by design (lua.c calls it from its SIGINT handler). */
static void on_signal(int sig) {
    for (int i = 0; i < MAX_STATES; i++) { baton_alloc_state *st = live_states[i]; if (st) request(st, sig); }
}
void baton_abort_on_signals(int enabled) { baton_signal_set_hook(enabled ? on_signal : NULL); }

/* print as in lua's lbaselib.c (a C function: debug.getinfo(print).what == "C"), each value
 * through luaL_tolstring (a __tostring may raise: this is C, raising is fine here), joined by
 * tabs; the line goes to upvalue 1 (Baton's writer, which adds the newline) as one string. */
static int baton_print(lua_State *L) {
    int n = lua_gettop(L);
    luaL_Buffer b;
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_call(L, 1, 0);
    return 0;
}

void baton_push_print(lua_State *L) { lua_pushcclosure(L, baton_print, 1); }
