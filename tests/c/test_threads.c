/* The thread pool, teams and barrier of csrc/common.c, built with
 * ThreadSanitizer by tests/test_csrc.py: members of teams of 2-4 write their
 * share of an array, meet, and check that every share of the step is there
 * (twice per step, 300 steps); regions of 1-4 slices each add one to every
 * element of their slices. Any data race, a barrier that lets a member through
 * early, or a lost slice fails; then a region with a late worker must make
 * the next ones run in the caller, for a while only, and a team with a late
 * member must disband, telling every member at the same phase. */
#define _POSIX_C_SOURCE 200112L   /* nanosleep, pthread_self under -std=c99 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "internal.h"
#define STEPS 300
typedef struct { fastrnn_barrier *bar; int *cells; int n_cells; int bad; } team_ctx;
/* each member writes its cells with the step number, meets, then checks every cell */
static void member(void *arg, int k, int n)
{
    team_ctx *c = arg;
    int lo = c->n_cells * k / n, hi = c->n_cells * (k + 1) / n;
    for (int s = 1; s <= STEPS; s++) {
        for (int i = lo; i < hi; i++) c->cells[i] = s;
        fastrnn_barrier_wait(c->bar);
        for (int i = 0; i < c->n_cells; i++) if (c->cells[i] < s) __atomic_fetch_add(&c->bad, 1, __ATOMIC_RELAXED);
        fastrnn_barrier_wait(c->bar);
    }
}
static void slice(void *arg, int s0, int s1) { int *a = arg; for (int i = s0; i < s1; i++) a[i] += 1; }
/* slices of 2: slice 1 sleeps (a worker descheduled on a busy machine) when
 * asked; each records whether it ran in the caller's thread */
typedef struct { pthread_t caller; int late, in_caller[2]; } stall_ctx;
static void stall_slice(void *arg, int s0, int s1)
{
    stall_ctx *c = arg;
    (void)s1;
    c->in_caller[s0] = pthread_equal(pthread_self(), c->caller);
    if (s0 == 1 && c->late) {
        struct timespec pause = {0, 5000000};   /* 5 ms */
        nanosleep(&pause, NULL);
    }
}
/* A region whose worker is late makes the next regions run their slices in the
 * caller, for a while; then they use the workers again. (Timing: on a loaded
 * machine the caller itself may be descheduled, so that its worker does not
 * look late; main gives it a few tries.) */
static int check_backoff(void)
{
    stall_ctx c = {pthread_self(), 1, {0, 0}};
    struct timespec later = {0, 400000000};   /* 0.4 s: past the backoff */
    nanosleep(&later, NULL);   /* the regions above may have started one */
    fastrnn_run_slices(2, 2, stall_slice, &c);
    if (c.in_caller[1]) { printf("the late slice ran in the caller\n"); return 1; }
    c.late = 0;
    fastrnn_run_slices(2, 2, stall_slice, &c);
    if (!c.in_caller[0] || !c.in_caller[1]) { printf("no backoff after a late worker\n"); return 1; }
    nanosleep(&later, NULL);
    fastrnn_run_slices(2, 2, stall_slice, &c);
    if (c.in_caller[1]) { printf("the backoff did not end\n"); return 1; }
    return 0;
}
/* member 1 of 2 is late (5 ms) at phase LATE_PHASE; each records what every
 * phase's barrier returned */
#define PHASES 6
#define LATE_PHASE 3
typedef struct { fastrnn_barrier *bar; long late_ns; int said[2][PHASES]; } disband_ctx;
static void disband_member(void *arg, int k, int n)
{
    disband_ctx *c = arg;
    (void)n;
    for (int p = 0; p < PHASES; p++) {
        if (k == 1 && (p == LATE_PHASE || c->late_ns < 1000000)) {
            struct timespec pause = {0, c->late_ns};
            nanosleep(&pause, NULL);
        }
        c->said[k][p] = fastrnn_barrier_wait(c->bar);
    }
}
/* A member late by late_ns at LATE_PHASE (5 ms), or at every phase (0.1 ms:
 * many short stalls): by LATE_PHASE both members are told to disband, and
 * every later phase says so too; calls then back off. Returns 2 for an
 * error whatever the timing (members told apart, a team that came back), 1
 * when it did not disband or back off (a timing the loaded machine may
 * spoil: main gives it a few tries). */
static int check_disband(long late_ns)
{
    fastrnn_barrier bar;
    disband_ctx c = {&bar, late_ns, {{0}}};
    struct timespec later = {0, 400000000};
    nanosleep(&later, NULL);   /* past any backoff started above */
    if (fastrnn_run_team(2, disband_member, &c, &bar) != 2) { printf("team did not run\n"); return 2; }
    int backing_off = fastrnn_backing_off();
    for (int p = 0; p < PHASES; p++) {
        if (c.said[0][p] != c.said[1][p]) { printf("members told apart at phase %d\n", p); return 2; }
        if (p > 0 && c.said[0][p - 1] && !c.said[0][p]) { printf("the team came back\n"); return 2; }
    }
    for (int p = LATE_PHASE; p < PHASES; p++)
        if (!c.said[0][p]) { printf("no disbanding at phase %d (%ld ns late)\n", p, late_ns); return 1; }
    if (!backing_off) { printf("no backoff after a late member\n"); return 1; }
    return 0;
}

/* check(arg) == 0 in one of five tries; any 2 fails at once */
static int within_tries(int (*check)(long), long arg)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        int r = check(arg);
        if (r != 1)
            return r;
    }
    return 1;
}
static int check_backoff_once(long unused) { (void)unused; return check_backoff(); }
int main(void)
{
    int cells[64] = {0}, arr[1000] = {0};
    fastrnn_barrier bar;
    team_ctx c = {&bar, cells, 64, 0};
    for (int r = 0; r < 6; r++) {
        int n = fastrnn_run_team(2 + r % 3, member, &c, &bar);
        if (n < 2) { printf("team did not run\n"); return 1; }
        for (int i = 0; i < 64; i++) cells[i] = 0;
        for (int k = 0; k < 50; k++) fastrnn_run_slices(1 + k % 4, 1000, slice, arr);
    }
    for (int i = 0; i < 1000; i++) if (arr[i] != 6 * 50) { printf("slices lost work\n"); return 1; }
    if (within_tries(check_backoff_once, 0)) return 1;
    if (within_tries(check_disband, 5000000) || within_tries(check_disband, 100000)) return 1;
    printf("%d early reads\n", c.bad);
    return c.bad != 0;
}
