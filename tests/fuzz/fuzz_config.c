/*
 * libFuzzer target: the configuration parser (config_parse_string). The
 * input is the file's text. A configuration that parses is dumped, and the
 * dump must parse again to the same settings: docs/CONFIG.md promises that
 * `sandpoold --check-config` prints a valid configuration.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"
#include "daemon/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(const struct config *cfg)
{
	struct config *again;
	char *text = NULL, err[512];
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return;
	config_dump(cfg, f);
	if (fclose(f) != 0)
		return;
	again = config_parse_string(text, "dump", NULL, err, sizeof(err));
	if (!again) {
		fprintf(stderr, "the dump does not parse: %s\n---\n%s---\n", err, text);
		__builtin_trap();
	}
	if (!config_daemon_equal(cfg, again) || cfg->n_templates != again->n_templates)
		__builtin_trap();
	for (unsigned i = 0; i < cfg->n_templates; i++)
		if (!config_template_equal(cfg->templates[i], again->templates[i]))
			__builtin_trap();
	config_free(again);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), err[512];
	struct config *cfg;

	if (!text)
		return 0;
	log_set_level(LOG_CRIT);
	memcpy(text, data, size);
	text[size] = '\0';
	cfg = config_parse_string(text, "fuzz", NULL, err, sizeof(err));
	if (cfg) {
		round_trip(cfg);
		config_free(cfg);
	} else if (!err[0]) {
		__builtin_trap(); /* every failure says why */
	}
	free(text);
	return 0;
}
