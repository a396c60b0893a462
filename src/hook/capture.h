/* Whether any stream of this process may be capturing a graph (capture.c:
 * the count of captures open, kept by the begin and end hooks). */
#ifndef VGPU_HOOK_CAPTURE_H
#define VGPU_HOOK_CAPTURE_H

#include <stdbool.h>

/* false: no stream of this process is capturing, a launch need not ask. */
bool capture_possible(void);
/* The driver said a stream captures while capture_possible() was false: a
 * capture began unseen; from now on capture_possible() stays true. */
void capture_unseen(void);

#endif
