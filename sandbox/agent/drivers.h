/*
 * The interpreter drivers' sources (sandbox/agent/driver.*), embedded in
 * the agent as C strings by embed.sh at build time: the sandbox's root
 * shows the host's /usr but not where the agent is installed, so the
 * agent hands each driver to its interpreter on the command line.
 */
#ifndef SANDPOOL_AGENT_DRIVERS_H
#define SANDPOOL_AGENT_DRIVERS_H

extern const char agent_driver_python[];
extern const char agent_driver_javascript[];
extern const char agent_driver_bash[];

#endif
