/* kernels_api.h -- the prototypes of one instantiation of the kernels, over
 * `real` and FN (no include guard: dispatch.c includes it once per variant).
 * Arguments as fastrnn_forward_f32 / fastrnn_backward_f32 in fastrnn.h. */
int FN(fastrnn_forward)(real *y, real *h_n, real *c_n, real *cache, real *work,
                        const real *x, const real *h0, const real *c0,
                        const real *w_ih, const real *w_hh,
                        const real *b_ih, const real *b_hh, const real *w_hr,
                        const real *peep,
                        const int *lengths, const int *order, const fastrnn_layer *L);
int FN(fastrnn_backward)(real *dx, real *dh0, real *dc0,
                         real *dw_ih, real *dw_hh, real *db_ih, real *db_hh, real *dw_hr,
                         real *dpeep, real *work, int accumulate_dx,
                         const real *dy, const real *dh_n, const real *dc_n,
                         const real *cache, const real *x,
                         const real *w_ih, const real *w_hh, const real *w_hr,
                         const real *peep,
                         const int *lengths, const int *order, const fastrnn_layer *L);
