/* posternctl.c: postern's native administration tool, with
 * systemctl-style verbs: "check" validates the configuration (see
 * posternctl-check.c) and "conf" is postconf under its native name (the
 * code is postconf-lib's). Verbs live in one table; a new verb is a row
 * plus its function. --json selects machine-readable output where a verb
 * lists something. */
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "postconf-lib.h"
#include "posternctl.h"

typedef struct Verb {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *summary;
} Verb;

static int verb_conf(int argc, char **argv) {
        return postconf_main(argc, argv, "posternctl conf");
}

static const Verb verbs[] = {
        {"check", verb_check, "validate the configuration, lookup tables and TLS files"},
        {"conf", verb_conf, "show or edit parameters (the options of postconf)"},
        {"policy", verb_policy, "explain the SMTP access policy for a client, step by step"},
        {"migrate", verb_migrate, "import a Postfix configuration directory"},
        {"queue", verb_queue, "list, show, hold, release, delete, requeue or flush queued mail"},
        {"trace", verb_trace, "show a message's journal entries from all units, in time order"},
};

static void help(void) {
        printf("Usage: posternctl [--help|--version] VERB [ARGS...]\n"
               "\n"
               "Administers the postern mail system.\n"
               "\n"
               "Verbs:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                printf("  %-8s %s\n", verbs[i].name, verbs[i].summary);
        printf("\n"
               "Options:\n"
               "  --help     show this help (\"posternctl VERB --help\" for a verb)\n"
               "  --version  show the version\n"
               "\n"
               "See posternctl(1).\n");
}

/* Moves global options given before the verb ("posternctl -c DIR --json
 * check") behind it, so that each verb parses them as its own; returns the
 * index of the verb in argv, or argc when there is none. */
static int hoist_verb(int argc, char **argv) {
        int i = 1;

        while (i < argc && argv[i][0] == '-' && !streq(argv[i], "--help") &&
               !streq(argv[i], "-h") && !streq(argv[i], "--version")) {
                /* -c takes a value unless it is attached (-cDIR). */
                if (streq(argv[i], "-c") && i + 1 < argc)
                        i++;
                i++;
        }
        if (i >= argc || i == 1)
                return i >= argc ? argc : 1;
        /* Rotate argv[1..i] so that the verb comes first. */
        char *verb = argv[i];
        memmove(argv + 2, argv + 1, (size_t) (i - 1) * sizeof(char *));
        argv[1] = verb;
        return 1;
}

int main(int argc, char **argv) {
        const char *verb;

        if (argc < 2 || hoist_verb(argc, argv) >= argc) {
                help();
                return 1;
        }
        verb = argv[1];
        if (streq(verb, "--help") || streq(verb, "-h") || streq(verb, "help")) {
                help();
                return 0;
        }
        if (streq(verb, "--version")) {
                printf("posternctl %s\n", POSTERN_VERSION);
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].name, verb))
                        return verbs[i].run(argc - 1, argv + 1);
        fprintf(stderr, "posternctl: error: unknown verb \"%s\"; see posternctl --help\n", verb);
        return 1;
}
