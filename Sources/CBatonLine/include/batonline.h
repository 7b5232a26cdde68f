#ifndef BATONLINE_H
#define BATONLINE_H
/* The shell's line editor: libedit through its readline interface.
 *
 * Swift 6 cannot assign C globals (rl_attempted_completion_function, the word
 * break characters, rl_completion_append_character), and libedit's completion
 * hook must return a malloc'd, NULL-terminated array. Both live here; the
 * candidates themselves are computed in Swift. */

/* Called on Tab. line: the whole line; start/end: where the word being
 * completed begins and ends, counted in characters (Unicode scalars), not
 * bytes; word: that word. The callback adds candidates with
 * baton_line_add_match: each replaces the whole word. */
typedef void (*baton_line_complete_fn)(const char *line, int start, int end, const char *word);

/* Sets the locale (LC_CTYPE, so non-ASCII input is kept), the program name,
 * the completion hook, and the word break characters. */
void baton_line_init(const char *name, baton_line_complete_fn fn);
void baton_line_add_match(const char *candidate);

/* One line, without its newline; NULL on end of input and on a signal (the
 * caller tells them apart with its own signal flag). Free with free(). */
char *baton_line_read(const char *prompt);

/* History. save: keeps the newest `max` entries (stifle_history: libedit's
 * history_truncate_file corrupts its header) and writes `path` through a
 * temporary file renamed over it, so a crash never leaves half a file.
 * Returns 0 or an errno. */
void baton_line_history_add(const char *entry);
int baton_line_history_load(const char *path);
int baton_line_history_save(const char *path, int max);
int baton_line_history_count(void);

#endif
