/*
 * What a service manager tells sandpoold through its environment, and
 * what sandpoold tells it back, spoken directly (no libsystemd):
 *
 *  - notification: "READY=1", "STATUS=...", ... as datagrams to
 *    $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace);
 *  - socket activation: a listening socket passed as fd 3 with
 *    $LISTEN_FDS / $LISTEN_PID / $LISTEN_FDNAMES;
 *  - the watchdog: "WATCHDOG=1" every $WATCHDOG_USEC / 2, sent by a
 *    timer on the event loop, so that a wedged loop stops the pings.
 *
 * sdnotify_init() reads and unsets every one of those variables, so no
 * child inherits them. Without them each call below does nothing and
 * the daemon runs as it would without systemd. Owns the notification
 * socket and the watchdog timer.
 */
#ifndef SANDPOOL_DAEMON_SDNOTIFY_H
#define SANDPOOL_DAEMON_SDNOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

/* The fd systemd passes the first socket on (SD_LISTEN_FDS_START). */
#define SDNOTIFY_LISTEN_FD 3

/*
 * Reads $NOTIFY_SOCKET, $WATCHDOG_USEC, $WATCHDOG_PID, $LISTEN_FDS,
 * $LISTEN_PID and $LISTEN_FDNAMES, then unsets them. Call it once, early,
 * in the process that will serve (the pid checks compare with getpid()).
 * Returns 0, or -errno when $NOTIFY_SOCKET is set but unusable (err says
 * why; notifications are then off).
 */
int sdnotify_init(char *err, size_t errlen) __attribute__((warn_unused_result));

/* Whether a service manager listens for notifications. */
bool sdnotify_enabled(void);

/*
 * Sends one notification: newline-separated "KEY=VALUE" assignments, for
 * instance "READY=1\nSTATUS=serving". Never blocks. Returns 0 (also when
 * notifications are off) or -errno.
 */
int sdnotify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * The socket passed by socket activation, checked to be a listening
 * AF_UNIX SOCK_STREAM socket and made close-on-exec. Returns its fd with
 * its bound path (or "@name", or "" when unnamed) in path; -ENOENT when
 * no socket was passed to this process; another -errno, with err, when
 * what was passed cannot be used.
 */
int sdnotify_listen_fd(char *path, size_t pathlen, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The watchdog interval asked for, in microseconds, or 0 when none. */
uint64_t sdnotify_watchdog_usec(void);

/* Starts the WATCHDOG=1 timer on base when a watchdog is asked for. */
int sdnotify_watchdog_start(struct event_base *base) __attribute__((warn_unused_result));

/* Stops the timer and closes the socket. */
void sdnotify_close(void);

#endif
