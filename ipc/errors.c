#include "autoconfig.h"

#include "ipc/sandpool.h"

#include <string.h>

static const char *const errcode_names[] = {
	[SANDPOOL_OK] = "ok",
#define SANDPOOL_X(name, text) [SANDPOOL_E_##name] = text,
	SANDPOOL_ERRORS(SANDPOOL_X)
#undef SANDPOOL_X
};

const char *sandpool_errcode_name(enum sandpool_errcode code)
{
	if ((unsigned)code >= sizeof(errcode_names) / sizeof(errcode_names[0]))
		return "internal";
	return errcode_names[code];
}

enum sandpool_errcode sandpool_errcode_from_name(const char *name, size_t len)
{
	for (unsigned i = 1; i < sizeof(errcode_names) / sizeof(errcode_names[0]); i++)
		if (strlen(errcode_names[i]) == len && memcmp(errcode_names[i], name, len) == 0)
			return (enum sandpool_errcode)i;
	return SANDPOOL_E_INTERNAL;
}
