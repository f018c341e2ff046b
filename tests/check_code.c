/*
 * End-to-end tests of stateful code execution and file access (issue 4):
 * a real sandpoold from the build tree, real sandboxes, driven through
 * libsandpool. One daemon serves the suite; the degraded-template test
 * starts its own.
 */
#include "autoconfig.h"

#include <check.h>
#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc/codec.h"
#include "tests/harness.h"

/* max_file_size small enough that the limit is cheap to cross. */
#define FILE_LIMIT (64 * 1024)

static const char *const templates = "[template py]\nlanguage = python\nmin_warm = 2\nmax_total = 8\n"
				     "preload = import json\nmax_output = 1M\nmax_file_size = 64K\n"
				     "[template sh]\nlanguage = shell\nmin_warm = 1\nmax_total = 4\n";

static struct fixture fx;

static void suite_setup(void)
{
	fixture_start(&fx, templates);
	if (!fixture_wait_warm(&fx, "py", 1, 30000)) {
		fixture_dump_log(&fx);
		ck_abort_msg("the py template never warmed up");
	}
}

static void suite_teardown(void)
{
	int rc = fixture_stop(&fx);

	if (rc != 0)
		fixture_dump_log(&fx);
	fixture_cleanup(&fx);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *lease(struct sandpool *sp, const char *tmpl)
{
	struct sandpool_lease_opts o = { .template_name = tmpl, .wait_ms = 20000 };
	struct sandpool_lease l = { 0 };
	struct sandpool_error err;
	char *id;

	ck_assert_msg(sandpool_lease(sp, &o, &l, &err) == 0, "lease %s: %s", tmpl, err.message);
	id = strdup(l.lease_id);
	sandpool_lease_free(&l);
	return id;
}

/* Runs code in lease's language (NULL: the template's) default context. */
static void run(struct sandpool *sp, const char *lease_id, const char *language, const char *code,
		uint32_t timeout_ms, struct sandpool_execution *ex)
{
	struct sandpool_code_opts o = { .code = code, .language = language, .timeout_ms = timeout_ms };
	struct sandpool_error err;

	ck_assert_msg(sandpool_code_run(sp, lease_id, &o, ex, &err) == 0, "code.run %s: %s", code, err.message);
}

/* Runs code and checks the main result's text (NULL: none) and no error. */
static void run_expect(struct sandpool *sp, const char *lease_id, const char *language, const char *code,
		       const char *text)
{
	struct sandpool_execution ex = { 0 };

	run(sp, lease_id, language, code, 0, &ex);
	ck_assert_msg(!ex.error_name, "%s: %s: %s\n%s", code, ex.error_name, ex.error_value ? ex.error_value : "",
		      ex.error_traceback ? ex.error_traceback : "");
	if (text)
		ck_assert_msg(ex.text && !strcmp(ex.text, text), "%s: main result %s, not %s", code,
			      ex.text ? ex.text : "(none)", text);
	else
		ck_assert_ptr_null(ex.text);
	sandpool_execution_free(&ex);
}

START_TEST(test_python_state)
{
	struct sandpool *sp = fixture_connect(&fx);
	char *l = lease(sp, "py");

	run_expect(sp, l, NULL, "x = 41", NULL);
	run_expect(sp, l, NULL, "x + 1", "42");
	run_expect(sp, l, "python", "import math", NULL);
	run_expect(sp, l, "python", "math.pi", "3.141592653589793");
	/* The template's preload ran in this context before it was warm. */
	run_expect(sp, l, NULL, "json.dumps([1])", "'[1]'");
	free(l);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_result_parts)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_execution ex = { 0 };
	char *l = lease(sp, "py");
	const msgpack_object *html;

	run(sp, l, NULL,
	    "print('out'); import sys; print('err', file=sys.stderr)\n"
	    "class H:\n    def _repr_html_(self): return '<b>h</b>'\n"
	    "display(7)\nH()",
	    0, &ex);
	ck_assert_ptr_null(ex.error_name);
	ck_assert_str_eq(ex.stdout_buf, "out\n");
	ck_assert_str_eq(ex.stderr_buf, "err\n");
	ck_assert_uint_eq(ex.n_results, 2);
	ck_assert(!ex.results[0].is_main_result);
	ck_assert_str_eq(ex.results[0].text, "7");
	ck_assert(ex.results[1].is_main_result);
	html = ipc_map_get(ex.results[1].map, "html");
	ck_assert(html && html->type == MSGPACK_OBJECT_STR && html->via.str.size == 8 &&
		  !memcmp(html->via.str.ptr, "<b>h</b>", 8));
	ck_assert_uint_eq(ex.execution_count, 1);
	ck_assert_str_eq(ex.context_id, "python-1");
	sandpool_execution_free(&ex);
	free(l);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_error_traceback)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_execution ex = { 0 };
	char *l = lease(sp, "py");

	run(sp, l, NULL, "def f():\n    return 1/0\nf()", 0, &ex);
	ck_assert_str_eq(ex.error_name, "ZeroDivisionError");
	ck_assert_str_eq(ex.error_value, "division by zero");
	ck_assert_msg(strstr(ex.error_traceback, "Traceback") && strstr(ex.error_traceback, "in f") &&
			      !strstr(ex.error_traceback, "<string>"),
		      "traceback: %s", ex.error_traceback);
	sandpool_execution_free(&ex);
	free(l);
	sandpool_close(sp);
}
END_TEST

struct pending_run {
	uint32_t msgid;
	char stdout_text[256];
};

static void collect_stdout(void *arg, const char *method, const msgpack_object *params)
{
	struct pending_run *pr = arg;
	const char *type, *data;
	uint32_t tlen, len;
	uint64_t request;

	if (strcmp(method, "code.output") || ipc_get_uint(params, "request", &request) < 0 || request != pr->msgid ||
	    ipc_get_str(params, "type", &type, &tlen) < 0 || tlen != 6 || memcmp(type, "stdout", 6) ||
	    ipc_get_bytes(params, "data", &data, &len) < 0)
		return;
	strncat(pr->stdout_text, data, len < 200 ? len : 200);
}

/* Sends code.run without waiting; params as the wire has them. */
static uint32_t send_run(struct sandpool *sp, const char *lease_id, const char *language, const char *code,
			 bool stream)
{
	msgpack_sbuffer buf;
	msgpack_packer pk;
	struct sandpool_error err;
	uint32_t msgid;

	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	ipc_pack_kv_str(&pk, "lease_id", lease_id);
	ipc_pack_kv_str(&pk, "language", language);
	ipc_pack_kv_str(&pk, "code", code);
	ipc_pack_kv_bool(&pk, "stream", stream);
	ck_assert_msg(sandpool_send(sp, "code.run", buf.data, buf.size, &msgid, &err) == 0, "%s", err.message);
	msgpack_sbuffer_destroy(&buf);
	return msgid;
}

START_TEST(test_bash_beside_python)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_execution ex = { 0 };
	struct sandpool_reply *r1, *r2;
	struct pending_run pr = { 0 };
	struct sandpool_error err;
	char *l = lease(sp, "py");
	uint32_t py;
	double t0;

	run_expect(sp, l, "bash", "cd /tmp; X=5", NULL);
	/* Both at once: a sleeping python cell does not hold up bash. */
	t0 = now_s();
	py = send_run(sp, l, "python", "import time; time.sleep(2); 'slept'", false);
	pr.msgid = send_run(sp, l, "bash", "echo $PWD $X", true);
	ck_assert_msg(sandpool_wait(sp, pr.msgid, collect_stdout, &pr, &r2, &err) == 0, "%s", err.message);
	ck_assert_msg(now_s() - t0 < 1.8, "bash waited for python: %.2f s", now_s() - t0);
	ck_assert_str_eq(pr.stdout_text, "/tmp 5\n");
	ck_assert_msg(sandpool_wait(sp, py, NULL, NULL, &r1, &err) == 0, "%s", err.message);
	sandpool_reply_free(r1);
	sandpool_reply_free(r2);
	/* A failing command is the cell's error. */
	run(sp, l, "bash", "false", 0, &ex);
	ck_assert_str_eq(ex.error_name, "ExitStatus");
	ck_assert_str_eq(ex.error_value, "1");
	sandpool_execution_free(&ex);
	free(l);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_shell_template_default)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_execution ex = { 0 };
	char *l = lease(sp, "sh");

	/* The template's language (shell) picks bash. */
	run(sp, l, NULL, "echo $((6 * 7))", 0, &ex);
	ck_assert_ptr_null(ex.error_name);
	ck_assert_str_eq(ex.stdout_buf, "42\n");
	ck_assert_str_eq(ex.context_id, "bash-1");
	sandpool_execution_free(&ex);
	free(l);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_timeout_interrupts)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_execution ex = { 0 };
	char *l = lease(sp, "py");
	double t0, took;

	run_expect(sp, l, NULL, "kept = 'state'", NULL);
	t0 = now_s();
	run(sp, l, NULL, "print('before', flush=True)\nwhile True: pass", 500, &ex);
	took = now_s() - t0;
	ck_assert_msg(took < 1.5, "the timeout took %.2f s", took);
	ck_assert_str_eq(ex.error_name, "TimeoutError");
	ck_assert_str_eq(ex.limit, "timeout");
	ck_assert_str_eq(ex.stdout_buf, "before\n");
	ck_assert(!ex.restarted);
	sandpool_execution_free(&ex);
	/* KeyboardInterrupt ended it: the context and its state survive. */
	run_expect(sp, l, NULL, "kept", "'state'");

	/* A cell that ignores SIGINT costs the context its state, not the sandbox. */
	t0 = now_s();
	run(sp, l, NULL, "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", 500, &ex);
	took = now_s() - t0;
	ck_assert_msg(took < 1.5, "the kill took %.2f s", took);
	ck_assert_str_eq(ex.error_name, "TimeoutError");
	ck_assert(ex.restarted);
	sandpool_execution_free(&ex);
	run_expect(sp, l, NULL, "1 + 1", "2");
	free(l);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_output_cap_and_binary)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_execution ex = { 0 };
	char *l = lease(sp, "py");

	run(sp, l, NULL, "print('x' * 10_000_000)", 0, &ex);
	ck_assert_ptr_null(ex.error_name);
	ck_assert(ex.truncated);
	ck_assert_uint_eq(ex.stdout_len, 1024 * 1024);
	sandpool_execution_free(&ex);

	run(sp, l, NULL, "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4); 'ok'", 0, &ex);
	ck_assert_ptr_null(ex.error_name);
	ck_assert_uint_eq(ex.stdout_len, 1024);
	for (size_t i = 0; i < 1024; i++)
		ck_assert_uint_eq((unsigned char)ex.stdout_buf[i], i % 256);
	ck_assert_str_eq(ex.text, "'ok'");
	sandpool_execution_free(&ex);
	/* Still alive and well after both. */
	run_expect(sp, l, NULL, "'\\udcff'", "'\\udcff'");
	free(l);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_contexts)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_code_opts o = { 0 };
	struct sandpool_execution ex = { 0 };
	struct sandpool_context c = { 0 };
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	const msgpack_object_array *list;
	char *l = lease(sp, "py");
	msgpack_sbuffer buf;
	msgpack_packer pk;

	ck_assert_msg(sandpool_context_create(sp, l, "python", "/tmp", &c, &err) == 0, "%s", err.message);
	ck_assert_str_eq(c.cwd, "/tmp");
	o.context_id = c.context_id;
	o.code = "import os; y = os.getcwd(); y";
	ck_assert_msg(sandpool_code_run(sp, l, &o, &ex, &err) == 0, "%s", err.message);
	ck_assert_str_eq(ex.text, "'/tmp'");
	sandpool_execution_free(&ex);
	/* Not in the default context. */
	run(sp, l, NULL, "y", 0, &ex);
	ck_assert_str_eq(ex.error_name, "NameError");
	sandpool_execution_free(&ex);

	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	ipc_pack_kv_str(&pk, "lease_id", l);
	ck_assert(sandpool_call(sp, "code.context.list", buf.data, buf.size, NULL, NULL, &r, &err) == 0);
	msgpack_sbuffer_destroy(&buf);
	ck_assert_int_eq(ipc_get_array(r->result, "contexts", &list), 0);
	ck_assert_uint_eq(list->size, 2);
	sandpool_reply_free(r);

	ck_assert_msg(sandpool_context_restart(sp, l, c.context_id, &err) == 0, "%s", err.message);
	o.code = "y";
	ck_assert(sandpool_code_run(sp, l, &o, &ex, &err) == 0);
	ck_assert_str_eq(ex.error_name, "NameError");
	sandpool_execution_free(&ex);

	ck_assert(sandpool_context_remove(sp, l, c.context_id, &err) == 0);
	ck_assert_int_eq(sandpool_code_run(sp, l, &o, &ex, &err), -EREMOTEIO);
	ck_assert_int_eq(err.code, SANDPOOL_E_NOT_FOUND);
	/* Both a language and a context is a contradiction. */
	o.language = "python";
	ck_assert_int_eq(sandpool_code_run(sp, l, &o, &ex, &err), -EINVAL);
	sandpool_context_free(&c);
	free(l);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_javascript)
{
	struct sandpool *sp;
	struct sandpool_execution ex = { 0 };
	char *l;

	if (access("/usr/bin/node", X_OK) != 0) {
		fprintf(stderr, "check_code: /usr/bin/node is not installed: javascript tests skipped\n");
		return;
	}
	sp = fixture_connect(&fx);
	l = lease(sp, "py");
	run_expect(sp, l, "javascript", "var x = 41", NULL);
	run_expect(sp, l, "javascript", "x + 1", "42");
	run_expect(sp, l, "js", "let s = 'a'; s + 'b'", "'ab'");
	run(sp, l, "javascript", "null.foo", 0, &ex);
	ck_assert_str_eq(ex.error_name, "TypeError");
	sandpool_execution_free(&ex);
	run(sp, l, "javascript", "console.log('hi'); while (true) {}", 500, &ex);
	ck_assert_str_eq(ex.error_name, "TimeoutError");
	ck_assert_str_eq(ex.stdout_buf, "hi\n");
	sandpool_execution_free(&ex);
	run_expect(sp, l, "javascript", "x", "41");
	free(l);
	sandpool_close(sp);
}
END_TEST

static void expect_file_error(struct sandpool *sp, const char *l, const char *path, enum sandpool_errcode code)
{
	struct sandpool_file_data d = { 0 };
	struct sandpool_error err;

	ck_assert_int_eq(sandpool_file_read(sp, l, path, 0, 0, &d, &err), -EREMOTEIO);
	ck_assert_msg(err.code == code, "read %s: %s (%s)", path, sandpool_errcode_name(err.code), err.message);
}

START_TEST(test_files)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_file_data d = { 0 };
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	const msgpack_object_array *entries;
	char *l = lease(sp, "py"), data[4096], *big;
	msgpack_sbuffer buf;
	msgpack_packer pk;
	const char *name;
	uint32_t len;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)(i * 7);
	ck_assert_msg(sandpool_file_write(sp, l, "dir/sub/blob.bin", data, sizeof(data), 0, false, &err) == 0, "%s",
		      err.message);
	ck_assert_msg(sandpool_file_read(sp, l, "/workspace/dir/sub/blob.bin", 0, 0, &d, &err) == 0, "%s",
		      err.message);
	ck_assert_uint_eq(d.len, sizeof(data));
	ck_assert(!memcmp(d.data, data, sizeof(data)));
	ck_assert(d.eof);
	sandpool_file_data_free(&d);
	ck_assert(sandpool_file_read(sp, l, "dir/sub/blob.bin", 100, 10, &d, &err) == 0);
	ck_assert_uint_eq(d.len, 10);
	ck_assert_uint_eq(d.size, sizeof(data));
	ck_assert(!memcmp(d.data, data + 100, 10));
	ck_assert(!d.eof);
	sandpool_file_data_free(&d);
	ck_assert(sandpool_file_write(sp, l, "dir/sub/blob.bin", "tail", 4, 0, true, &err) == 0);
	/* Code sees the file, and wrote as the same user. */
	run_expect(sp, l, NULL, "import os; os.path.getsize('dir/sub/blob.bin')", "4100");
	run_expect(sp, l, NULL, "os.stat('dir/sub/blob.bin').st_uid == os.getuid()", "True");

	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	ipc_pack_kv_str(&pk, "lease_id", l);
	ipc_pack_kv_str(&pk, "path", "dir/sub");
	ck_assert(sandpool_call(sp, "files.list", buf.data, buf.size, NULL, NULL, &r, &err) == 0);
	msgpack_sbuffer_destroy(&buf);
	ck_assert_int_eq(ipc_get_array(r->result, "entries", &entries), 0);
	ck_assert_uint_eq(entries->size, 1);
	ck_assert_int_eq(ipc_get_str(&entries->ptr[0], "name", &name, &len), 0);
	ck_assert(len == 8 && !memcmp(name, "blob.bin", 8));
	sandpool_reply_free(r);

	ck_assert(sandpool_file_remove(sp, l, "dir", &err) == 0);
	expect_file_error(sp, l, "dir/sub/blob.bin", SANDPOOL_E_NOT_FOUND);

	/* The size limit, both ways. */
	big = calloc(1, FILE_LIMIT + 1);
	ck_assert_int_eq(sandpool_file_write(sp, l, "big", big, FILE_LIMIT + 1, 0, false, &err), -EREMOTEIO);
	ck_assert_int_eq(err.code, SANDPOOL_E_LIMIT_EXCEEDED);
	ck_assert(sandpool_file_write(sp, l, "big", big, FILE_LIMIT, 0, false, &err) == 0);
	ck_assert(sandpool_file_write(sp, l, "big", big, 1, 0, true, &err) == 0);
	expect_file_error(sp, l, "big", SANDPOOL_E_LIMIT_EXCEEDED);
	ck_assert(sandpool_file_read(sp, l, "big", 1, FILE_LIMIT, &d, &err) == 0);
	ck_assert_uint_eq(d.len, FILE_LIMIT);
	sandpool_file_data_free(&d);
	free(big);

	/* Nothing of the host: relative paths stay in /workspace, absolute
	 * ones are the sandbox's. */
	expect_file_error(sp, l, "../../etc/shadow", SANDPOOL_E_NOT_FOUND);
	expect_file_error(sp, l, "/etc/shadow", SANDPOOL_E_NOT_FOUND);
	expect_file_error(sp, l, fx.conf, SANDPOOL_E_NOT_FOUND);
	ck_assert(sandpool_file_write(sp, l, "../../escaped", "x", 1, 0, false, &err) == 0);
	run_expect(sp, l, NULL, "os.path.exists('/workspace/escaped'), os.path.exists('/escaped')", "(True, False)");
	ck_assert_int_eq(sandpool_file_write(sp, l, "/etc/passwd", "x", 1, 0, false, &err), -EREMOTEIO);
	ck_assert_int_eq(err.code, SANDPOOL_E_FORBIDDEN);
	ck_assert_int_eq(sandpool_file_write(sp, l, "/proc/1/mem", "x", 1, 0, false, &err), -EREMOTEIO);
	ck_assert_int_eq(sandpool_file_read(sp, l, "/proc/1/environ", 0, 0, &d, &err), -EREMOTEIO);
	ck_assert_int_eq(err.code, SANDPOOL_E_FORBIDDEN);
	free(l);
	sandpool_close(sp);
}
END_TEST

/* Runs the CLI with argv; its stdout in out, its exit status returned. */
static int cli(const char *const *args, char *out, size_t outlen)
{
	char exe[512], cmd[4096];
	size_t off;
	FILE *p;
	int status;

	snprintf(exe, sizeof(exe), "%s/sandpool", builddir());
	off = (size_t)snprintf(cmd, sizeof(cmd), "'%s' --socket '%s'", exe, fx.sock);
	for (; *args; args++)
		off += (size_t)snprintf(cmd + off, sizeof(cmd) - off, " '%s'", *args);
	snprintf(cmd + off, sizeof(cmd) - off, " 2>/dev/null");
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	off = fread(out, 1, outlen - 1, p);
	out[off] = '\0';
	status = pclose(p);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

START_TEST(test_cli)
{
	struct sandpool *sp = fixture_connect(&fx);
	char *l = lease(sp, "py"), out[4096], remote[128], local[400], back[400];
	FILE *f;

	ck_assert_int_eq(cli((const char *[]){ "code", l, "v = 20", NULL }, out, sizeof(out)), 0);
	ck_assert_int_eq(cli((const char *[]){ "code", l, "print(\"p\"); v * 2 + 2", NULL }, out, sizeof(out)), 0);
	ck_assert_str_eq(out, "p\n42\n");
	ck_assert_int_eq(cli((const char *[]){ "code", l, "-l", "bash", "echo hi", NULL }, out, sizeof(out)), 0);
	ck_assert_str_eq(out, "hi\n");
	ck_assert_int_eq(cli((const char *[]){ "code", l, "1/0", NULL }, out, sizeof(out)), 1);

	snprintf(local, sizeof(local), "%s/cp-src", fx.dir);
	snprintf(back, sizeof(back), "%s/cp-back", fx.dir);
	f = fopen(local, "w");
	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < 100000; i++)
		fputc(i % 251, f);
	fclose(f);
	snprintf(remote, sizeof(remote), "%s:copied", l);
	ck_assert_int_eq(cli((const char *[]){ "cp", local, remote, NULL }, out, sizeof(out)), 0);
	ck_assert_int_eq(cli((const char *[]){ "cp", remote, back, NULL }, out, sizeof(out)), 0);
	snprintf(out, sizeof(out), "cmp -s '%s' '%s'", local, back);
	ck_assert_int_eq(system(out), 0);
	free(l);
	sandpool_close(sp);
}
END_TEST

/* A template whose preload fails never warms; after three tries it is
 * degraded with the preload's error. */
START_TEST(test_preload_failure_degrades)
{
	struct fixture bad = { 0 };
	struct sandpool *sp;
	bool degraded = false;
	char last_error[512] = "";

	fixture_start(&bad, "[template bad]\nlanguage = python\nmin_warm = 1\nmax_total = 2\n"
			    "preload = import nonexistent_module\n");
	sp = fixture_connect(&bad);
	for (int i = 0; i < 300 && !degraded; i++) {
		struct sandpool_reply *r = NULL;
		struct sandpool_error err;
		const msgpack_object_array *ts;
		const char *s;
		uint32_t len;

		ck_assert(sandpool_call(sp, "pool.stats", NULL, 0, NULL, NULL, &r, &err) == 0);
		ck_assert_int_eq(ipc_get_array(r->result, "templates", &ts), 0);
		(void)ipc_get_bool(&ts->ptr[0], "degraded", &degraded);
		if (ipc_get_str(&ts->ptr[0], "last_error", &s, &len) == 0)
			snprintf(last_error, sizeof(last_error), "%.*s", (int)len, s);
		sandpool_reply_free(r);
		if (!degraded)
			usleep(50000);
	}
	ck_assert_msg(degraded, "not degraded; last error: %s", last_error);
	ck_assert_msg(strstr(last_error, "ModuleNotFoundError") && strstr(last_error, "nonexistent_module"),
		      "last_error: %s", last_error);
	sandpool_close(sp);
	ck_assert_int_eq(fixture_stop(&bad), 0);
	fixture_cleanup(&bad);
}
END_TEST

static Suite *code_suite(void)
{
	Suite *s = suite_create("code");
	TCase *tc = tcase_create("e2e");
	TCase *solo = tcase_create("degraded");

	tcase_set_timeout(tc, 120);
	tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
	tcase_add_test(tc, test_python_state);
	tcase_add_test(tc, test_result_parts);
	tcase_add_test(tc, test_error_traceback);
	tcase_add_test(tc, test_bash_beside_python);
	tcase_add_test(tc, test_shell_template_default);
	tcase_add_test(tc, test_timeout_interrupts);
	tcase_add_test(tc, test_output_cap_and_binary);
	tcase_add_test(tc, test_contexts);
	tcase_add_test(tc, test_javascript);
	tcase_add_test(tc, test_files);
	tcase_add_test(tc, test_cli);
	suite_add_tcase(s, tc);
	tcase_set_timeout(solo, 60);
	tcase_add_test(solo, test_preload_failure_degrades);
	suite_add_tcase(s, solo);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(code_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
