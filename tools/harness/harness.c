/* Runs the cases written by write_cases.py through every build of the kernels this CPU can run
 * (csrc/kernels_<isa>.c; fl_isa_available) and compares each output and gradient with the NumPy
 * reference's, to the tolerances of tests/test_native_vs_reference.py: 1e-10 in float64 and
 * 1e-4 in float32, relative to max(1, max |reference|). Prints a line per case and build;
 * exits 1 when any result is off.
 *
 * Usage: harness CASE_FILE...     (build: tools/harness/run.sh) */
#include "fastlstm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A case's arrays, in the order write_cases.py writes them (NULL where the cell has none). */
enum {
    X, H0, C0, W_IH, W_HH, B_IH, B_HH, W_HR, W_PEEP, DY, DH_N, DC_N,        /* inputs */
    Y, H_N, C_N, DX, DH0, DC0, DW_IH, DW_HH, DB_IH, DB_HH, DW_HR, DW_PEEP,  /* reference */
    N_ARRAYS
};
static const char *const names[N_ARRAYS] = {
    "x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_peephole", "dy", "dh_n", "dc_n",
    "y", "h_n", "c_n", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dw_hr",
    "dw_peephole"};

typedef struct {
    fl_layer l;
    int f64;
    size_t size;                /* bytes of an element */
    int64_t count[N_ARRAYS];    /* elements, 0 where absent */
    char *a[N_ARRAYS];
} test_case;

static void *alloc(int64_t n, size_t size)
{
    void *p = calloc((size_t)(n > 0 ? n : 1), size);
    if (!p) {
        fprintf(stderr, "harness: out of memory\n");
        exit(2);
    }
    return p;
}

static int read_case(const char *path, test_case *c)
{
    FILE *f = fopen(path, "rb");
    int64_t h[8];
    if (!f || fread(h, sizeof h, 1, f) != 1)
        return fprintf(stderr, "harness: cannot read %s\n", path), 0;
    memset(c, 0, sizeof *c);
    c->l.cell = (int)h[0], c->l.T = h[1], c->l.B = h[2], c->l.I = h[3], c->l.H = h[4];
    c->l.P = h[5], c->l.peephole = (int)h[6], c->f64 = (int)h[7];
    c->l.projection = c->l.P != c->l.H;
    c->l.input_grad = 1;
    c->size = c->f64 ? sizeof(double) : sizeof(float);
    const int lstm = c->l.cell == FL_LSTM;
    const int64_t T = c->l.T, B = c->l.B, I = c->l.I, H = c->l.H, P = c->l.P;
    const int64_t GH = (lstm ? 4 : c->l.cell == FL_GRU ? 3 : 1) * H;
    const int64_t counts[N_ARRAYS] = {
        T * B * I, B * P, lstm * B * H, GH * I, GH * P, GH, GH, c->l.projection * P * H,
        c->l.peephole * 3 * H, T * B * P, B * P, lstm * B * H,
        T * B * P, B * P, lstm * B * H, T * B * I, B * P, lstm * B * H, GH * I, GH * P, GH, GH,
        c->l.projection * P * H, c->l.peephole * 3 * H};
    for (int k = 0; k < N_ARRAYS; k++) {
        c->count[k] = counts[k];
        if (!counts[k])
            continue;
        c->a[k] = alloc(counts[k], c->size);
        if (fread(c->a[k], c->size, (size_t)counts[k], f) != (size_t)counts[k])
            return fprintf(stderr, "harness: %s is short\n", path), fclose(f), 0;
    }
    fclose(f);
    return 1;
}

static double element(const test_case *c, const char *p, int64_t i)
{
    return c->f64 ? ((const double *)p)[i] : ((const float *)p)[i];
}

/* The largest error of `got` against the reference's array k, relative to its scale. */
static double rel_err(const test_case *c, int k, const char *got)
{
    double scale = 1, err = 0;
    for (int64_t i = 0; i < c->count[k]; i++)
        scale = fmax(scale, fabs(element(c, c->a[k], i)));
    for (int64_t i = 0; i < c->count[k]; i++) {
        const double d = fabs(element(c, got, i) - element(c, c->a[k], i));
        err = d > err || d != d ? d : err; /* NaN counts as the worst */
    }
    return err / scale;
}

static void run(const fl_layer *l, int backward, int f64, void *slots[])
{
    if (f64)
        (backward ? fl_backward_f64 : fl_forward_f64)(l, (double *const *)slots, 2);
    else
        (backward ? fl_backward_f32 : fl_forward_f32)(l, (float *const *)slots, 2);
}

/* One case through one build: forward, backward, every result compared. Returns the worst
 * error relative to the tolerance (pass: <= 1). */
static double check(test_case *c, int isa)
{
    fl_layer l = c->l;
    l.isa = isa;
    const size_t z = c->size;
    const int lstm = l.cell == FL_LSTM, gru = l.cell == FL_GRU;
    const int64_t T = l.T, B = l.B, H = l.H, P = l.P, N = T * B;
    const int64_t GH = (lstm ? 4 : gru ? 3 : 1) * H;
    void *s[FL_N_SLOTS] = {0};
    s[FL_X] = c->a[X], s[FL_W_IH] = c->a[W_IH], s[FL_W_HH] = c->a[W_HH];
    s[FL_B_IH] = c->a[B_IH], s[FL_B_HH] = c->a[B_HH], s[FL_W_HR] = c->a[W_HR];
    s[FL_W_PEEPHOLE] = c->a[W_PEEP];
    char *hs = alloc(B + N, z * P), *cs = lstm ? alloc(B + N, z * H) : NULL;
    memcpy(hs, c->a[H0], (size_t)(B * P) * z);
    if (lstm)
        memcpy(cs, c->a[C0], (size_t)(B * H) * z);
    s[FL_HS] = hs, s[FL_CS] = cs;
    s[FL_GATES] = lstm || gru ? alloc(N, z * GH) : NULL;
    s[FL_HN] = gru ? alloc(N, z * H) : NULL;
    s[FL_WORK] = alloc(fl_work_size(&l, 0, c->f64), z);
    run(&l, 0, c->f64, s);
    free(s[FL_WORK]);

    char *dh = alloc(B, z * P), *dc = lstm ? alloc(B, z * H) : NULL;
    memcpy(dh, c->a[DH_N], (size_t)(B * P) * z);
    if (lstm)
        memcpy(dc, c->a[DC_N], (size_t)(B * H) * z);
    s[FL_DY] = c->a[DY], s[FL_DH] = dh, s[FL_DC] = dc;
    char *out[N_ARRAYS] = {0};
    const int grads[] = {DX, DW_IH, DW_HH, DB_IH, DB_HH, DW_HR, DW_PEEP};
    const int slots[] = {FL_DX, FL_DW_IH, FL_DW_HH, FL_DB_IH, FL_DB_HH, FL_DW_HR,
                         FL_DW_PEEPHOLE};
    for (int g = 0; g < 7; g++)
        if (c->count[grads[g]])
            s[slots[g]] = out[grads[g]] = alloc(c->count[grads[g]], z);
    s[FL_WORK] = alloc(fl_work_size(&l, 1, c->f64), z);
    run(&l, 1, c->f64, s);
    free(s[FL_WORK]);

    out[Y] = hs + (size_t)(B * P) * z, out[H_N] = hs + (size_t)(N * P) * z;
    out[C_N] = lstm ? cs + (size_t)(N * H) * z : NULL;
    out[DH0] = dh, out[DC0] = dc;
    const double tol = c->f64 ? 1e-10 : 1e-4;
    double worst = 0;
    for (int k = Y; k < N_ARRAYS; k++) {
        if (!c->count[k])
            continue;
        const double e = rel_err(c, k, out[k]) / tol;
        if (!(e <= 1))
            printf("    %s off: %.3g relative, tolerance %.0e\n", names[k], e * tol, tol);
        worst = e > worst || e != e ? e : worst;
    }
    free(hs), free(cs), free(s[FL_GATES]), free(s[FL_HN]), free(dh), free(dc);
    for (int g = 0; g < 7; g++)
        free(out[grads[g]]);
    return worst;
}

int main(int argc, char **argv)
{
    fl_init();
    int failed = 0, runs = 0;
    for (int i = 1; i < argc; i++) {
        test_case c;
        if (!read_case(argv[i], &c))
            return 2;
        const char *name = strrchr(argv[i], '/') ? strrchr(argv[i], '/') + 1 : argv[i];
        for (int isa = 0; isa < FL_N_ISAS; isa++) {
            if (!fl_isa_available(isa))
                continue;
            const double worst = check(&c, isa);
            const int ok = worst <= 1;
            printf("%-28s %-8s %s (worst error %.2g of the tolerance)\n", name,
                   fl_isa_name(isa), ok ? "ok" : "FAILED", worst);
            failed += !ok, runs++;
        }
        for (int k = 0; k < N_ARRAYS; k++)
            free(c.a[k]);
    }
    printf("%d passed, %d failed\n", runs - failed, failed);
    return failed ? 1 : 0;
}
