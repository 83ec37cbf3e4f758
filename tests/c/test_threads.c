/* The thread pool, teams and barrier of csrc/common.c, built with
 * ThreadSanitizer by tests/test_csrc.py: members of teams of 2-4 write their
 * share of an array, meet, and check that every share of the step is there
 * (twice per step, 300 steps); regions of 1-4 slices each add one to every
 * element of their slices. Any data race, a barrier that lets a member through
 * early, or a lost slice fails. */
#include <stdio.h>
#include <stdlib.h>
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
    printf("%d early reads\n", c.bad);
    return c.bad != 0;
}
