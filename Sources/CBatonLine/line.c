#include "batonline.h"
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libgen.h>
#include <sys/stat.h>
#include <editline/readline.h>

static baton_line_complete_fn completer = NULL;
static char **pending = NULL;
static size_t npending = 0, cap = 0;

/* Lua's operators and brackets break words; '.', ':' (fields, methods,
 * meta-commands), '/' and '-' (paths) do not. */
static char word_breaks[] = " \t\n\"'`@$><=;|&{(,[)]}+*%^~#!";

void baton_line_add_match(const char *candidate) {
    if (npending == cap) {
        size_t ncap = cap ? cap * 2 : 32;
        char **p = realloc(pending, ncap * sizeof *p);
        if (!p) return;
        pending = p; cap = ncap;
    }
    char *s = strdup(candidate);
    if (s) pending[npending++] = s;
}

static char **attempted(const char *text, int start, int end) {
    rl_attempted_completion_over = 1; /* never fall back to file names */
    npending = 0;
    if (!completer) return NULL;
    completer(rl_line_buffer ? rl_line_buffer : "", start, end, text ? text : "");
    if (npending == 0) return NULL;
    /* matches[0] is what replaces the word: the one match, or the longest
     * common prefix of all of them, which are listed after it. */
    char **m = calloc(npending + 2, sizeof *m);
    if (!m) { for (size_t i = 0; i < npending; i++) free(pending[i]); npending = 0; return NULL; }
    if (npending == 1) {
        m[0] = pending[0];
    } else {
        size_t lcp = strlen(pending[0]);
        for (size_t i = 1; i < npending; i++) {
            size_t k = 0;
            while (k < lcp && pending[i][k] == pending[0][k]) k++;
            lcp = k;
        }
        /* never cut a UTF-8 sequence in half */
        while (lcp > 0 && (pending[0][lcp] & 0xC0) == 0x80) lcp--;
        m[0] = strndup(pending[0], lcp);
        for (size_t i = 0; i < npending; i++) m[i + 1] = pending[i];
    }
    npending = 0;
    return m;
}

void baton_line_init(const char *name, baton_line_complete_fn fn) {
    setlocale(LC_CTYPE, "");
    rl_readline_name = name;
    completer = fn;
    rl_attempted_completion_function = attempted;
    rl_basic_word_break_characters = word_breaks;
    rl_completer_word_break_characters = word_breaks;
    rl_completion_append_character = '\0'; /* candidates carry their own suffix */
    rl_initialize();
}

char *baton_line_read(const char *prompt) { return readline(prompt); }

void baton_line_history_add(const char *entry) { add_history(entry); }

int baton_line_history_load(const char *path) { return read_history(path); }

int baton_line_history_count(void) { return history_length; }

int baton_line_history_save(const char *path, int max) {
    stifle_history(max);
    size_t n = strlen(path);
    char *tmp = malloc(n + 32);
    if (!tmp) return ENOMEM;
    snprintf(tmp, n + 32, "%s.tmp.%ld", path, (long)getpid());
    int r = write_history(tmp);
    if (r != 0) { unlink(tmp); free(tmp); return r; }
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) { fsync(fd); close(fd); }
    chmod(tmp, 0600);
    if (rename(tmp, path) != 0) { int e = errno; unlink(tmp); free(tmp); return e; }
    free(tmp);
    char *copy = strdup(path);
    if (copy) {
        int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) { fsync(dfd); close(dfd); }
        free(copy);
    }
    return 0;
}
