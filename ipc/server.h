/*
 * The Unix-socket server: accepts connections (bounded), reads
 * msgpack-RPC frames (bounded), enforces the in-flight request limit and
 * hands each request to the handler table's on_request. Owns struct
 * ipc_conn and its bufferevent; a connection is freed only after
 * on_close, so work the handler still holds for it can be cancelled
 * there.
 */
#ifndef SANDPOOL_IPC_SERVER_H
#define SANDPOOL_IPC_SERVER_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ipc/codec.h"
#include "ipc/sandpool.h"

struct event_base;
struct ipc_server;
struct ipc_conn;

struct ipc_server_limits {
	unsigned max_connections;
	unsigned max_inflight;
	size_t max_frame;
	size_t max_output_buffer; /* a peer that reads slower than this is dropped */
};

struct ipc_handlers {
	/* A request; the handler must answer it exactly once, now or later,
	 * with ipc_conn_reply_*(), unless the connection closes first. */
	void (*on_request)(struct ipc_conn *c, const struct rpc_msg *m);
	/* The connection is going away; cancel everything that refers to it. */
	void (*on_close)(struct ipc_conn *c);
};

/* listen_fd >= 0 adopts an already-bound listening socket (socket
 * activation); otherwise path is bound with mode and group (gid -1: leave). */
struct ipc_server *ipc_server_new(struct event_base *base, const char *path, int listen_fd,
				  mode_t mode, gid_t gid, const struct ipc_server_limits *lim,
				  const struct ipc_handlers *h, char *err, size_t errlen);
/* Stops accepting; existing connections stay. */
void ipc_server_stop_accepting(struct ipc_server *srv);
/* Closes every connection (on_close for each) and frees the server. */
void ipc_server_free(struct ipc_server *srv);
unsigned ipc_server_connection_count(const struct ipc_server *srv);

uid_t ipc_conn_uid(const struct ipc_conn *c);
pid_t ipc_conn_pid(const struct ipc_conn *c);
uint64_t ipc_conn_id(const struct ipc_conn *c);
void *ipc_conn_get_data(const struct ipc_conn *c);
void ipc_conn_set_data(struct ipc_conn *c, void *data);

/* Begins a success response: packs [1, msgid, nil, and returns the packer
 * for exactly one result object. Ends the request's in-flight slot. */
msgpack_packer *ipc_conn_reply_ok(struct ipc_conn *c, uint32_t msgid);
void ipc_conn_reply_error(struct ipc_conn *c, uint32_t msgid, enum sandpool_errcode code,
			  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Begins a notification: packs [2, method, [ and returns the packer for
 * exactly one params map. */
msgpack_packer *ipc_conn_notify(struct ipc_conn *c, const char *method);

#endif
