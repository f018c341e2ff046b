/*
 * The RPC methods of docs/PROTOCOL.md: turns requests into pool, lease
 * and sandbox operations and their outcomes into responses. Owns the
 * per-connection client state (its leases, queued lease requests and
 * running execs) and everything it allocates for a request in flight.
 */
#ifndef SANDPOOL_DAEMON_RPC_H
#define SANDPOOL_DAEMON_RPC_H

#include "daemon/config.h"
#include "ipc/server.h"

struct sandbox;

extern const struct ipc_handlers rpc_handlers;

struct event_base;

int rpc_init(struct event_base *base, const struct config *cfg) __attribute__((warn_unused_result));
void rpc_set_server(struct ipc_server *srv);
/* Pool hook: a leased sandbox is lost or must go; ends its lease. */
void rpc_sandbox_lost(struct sandbox *sb, int reason, const char *why);

#endif
