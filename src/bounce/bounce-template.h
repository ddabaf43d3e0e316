/* bounce-template.h: the texts of delivery status notifications. A
 * BounceTemplates set holds one template per kind of report (failure, delay,
 * success, verify), each with its Charset, From, Subject and
 * Postmaster-Subject headers and the readable text. The built-in defaults
 * come from bounce_templates_new(); bounce_templates_parse() reads a
 * bounce_template_file (bounce(5): "failure_template = <<EOF ... EOF") over
 * them. Expansion of $name in a template happens at use time through
 * bounce_template_expand() and a lookup callback, so that this module knows
 * nothing about the configuration. Pure functions: no I/O, no logging. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "cleanup.h"
#include "diag.h"
#include "strutil.h"

/* A template file larger than this is refused; a template's text, too. */
#define BOUNCE_TEMPLATE_FILE_MAX (1024u * 1024)
#define BOUNCE_TEMPLATE_TEXT_MAX (64u * 1024)

typedef enum BounceTemplateKind {
        BOUNCE_TEMPLATE_FAILURE,
        BOUNCE_TEMPLATE_DELAY,
        BOUNCE_TEMPLATE_SUCCESS,
        BOUNCE_TEMPLATE_VERIFY,         /* accepted for Postfix compatibility, not used */
        _BOUNCE_TEMPLATE_MAX,
} BounceTemplateKind;

typedef struct BounceTemplate {
        char *charset;                  /* MIME charset of the text, e.g. "us-ascii" */
        char *from;                     /* From: header value, unexpanded */
        char *subject;                  /* unexpanded */
        char *postmaster_subject;       /* subject of postmaster copies, unexpanded */
        char *text;                     /* unexpanded, LF line ends, ends with LF */
        bool from_file;                 /* set by the template file, not the default */
} BounceTemplate;

typedef struct BounceTemplates {
        BounceTemplate t[_BOUNCE_TEMPLATE_MAX];
} BounceTemplates;

/* "failure_template" and so on; NULL for an out-of-range kind. */
const char *bounce_template_kind_to_string(BounceTemplateKind k);

/* Builds the set of built-in templates. Returns 0 or -ENOMEM; caller frees
 * *ret with bounce_templates_free(). */
int bounce_templates_new(BounceTemplates **ret);
BounceTemplates *bounce_templates_free(BounceTemplates *t);
DEFINE_CLEANUP_FUNC(BounceTemplates, bounce_templates_free);

/* Parses the text of a bounce_template_file (len bytes, may hold NULs,
 * which are errors) over the built-in defaults: each section found
 * replaces its default, the others keep it. Problems go into diags with
 * file:line; unknown template names, unknown headers, a missing "<<WORD",
 * an unterminated here-document, 8-bit text under a us-ascii charset and
 * non-ASCII headers are errors. Returns 0 (the set in *ret, caller frees),
 * -EINVAL when there were errors (nothing in *ret), -ENOMEM. */
int bounce_templates_parse(const char *text, size_t len, const char *file, Diag *diags,
                           BounceTemplates **ret);

/* Appends the templates set by the file to out, in template file syntax,
 * and "NAME: built-in" lines for the others. For tests and diagnostics. */
int bounce_templates_dump(const BounceTemplates *t, StrBuf *out);

/* Answers the value of $name (borrowed, valid until the next call or the
 * end of the expansion), or NULL when the name is unknown. */
typedef const char *(*BounceTemplateLookup)(const char *name, void *userdata);

/* Expands $name and ${name} in text through lookup; "$$" gives "$". An
 * unknown name stays as written and counts in *ret_unknown (may be NULL).
 * Returns 0 with the result in *ret (caller frees), -ENOMEM. */
int bounce_template_expand(const char *text, BounceTemplateLookup lookup, void *userdata,
                           char **ret, unsigned *ret_unknown);
