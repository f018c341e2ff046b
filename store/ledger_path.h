/*
 * Where the ledger lives when ledger_path is not configured. The daemon's
 * config default and `sandpool report --db` must agree, and neither should
 * link the other, so the rule lives here, header-only.
 *
 * Not the state dir: that is /run (tmpfs) for root, and the ledger is a
 * record that must survive a reboot.
 */
#ifndef SANDPOOL_STORE_LEDGER_PATH_H
#define SANDPOOL_STORE_LEDGER_PATH_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The word that turns the ledger off: ledger_path = off. */
#define LEDGER_PATH_OFF "off"

/*
 * Root: /var/lib/sandpool/ledger.db. Others: $XDG_STATE_HOME/sandpool/
 * ledger.db, else ~/.local/state/sandpool/ledger.db (the XDG default), else
 * /tmp/sandpool-UID/ledger.db. Returns 0 or -ENAMETOOLONG.
 */
static inline int ledger_default_path(char *buf, size_t len)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	int n;

	if (geteuid() == 0)
		n = snprintf(buf, len, "/var/lib/sandpool/ledger.db");
	else if (xdg && xdg[0] == '/')
		n = snprintf(buf, len, "%s/sandpool/ledger.db", xdg);
	else if (home && home[0] == '/')
		n = snprintf(buf, len, "%s/.local/state/sandpool/ledger.db", home);
	else
		n = snprintf(buf, len, "/tmp/sandpool-%u/ledger.db", (unsigned)geteuid());
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

#endif
