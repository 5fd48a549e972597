// compress --report: one self-contained HTML file with inline SVG (no script, no network):
//   - svg#allocation: the chosen bits per weight of every matrix, coloured by method;
//   - per matrix an svg.curve: relative error (log scale) against bits per weight of every
//     candidate, coloured by method, the chosen one ringed (circle.chosen), each point titled
//     with its spec; and an svg.spectrum of its leading singular values when measured.
#include "compress_impl.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static const char *const k_colors[SM_M_COUNT] = {"#555555", "#1f77b4", "#ff7f0e", "#8c564b",
                                                 "#e377c2", "#2ca02c", "#d62728", "#9467bd",
                                                 "#bcbd22", "#17becf", "#7f7f7f", "#000000"};

static int method_index(const char *name) {
    for (int i = 0; i < SM_M_COUNT; i++)
        if (!strcmp(name, sm_method_names[i])) return i;
    return SM_M_PIN;
}

static void esc(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else
            fputc(*s, f);
    }
}

static double rel_of(double err, double energy) {
    double r = energy > 0 ? sqrt(err / energy) : sqrt(err);
    return r < 1e-4 ? 1e-4 : r;
}

enum { CW = 380, CH = 230, ML = 46, MB = 30, MT = 10, MR = 10 };

static void curve(FILE *f, const sm_compress *c, int i) {
    sm_compress_matrix mx;
    sm_compress_get_matrix(c, i, &mx);
    double wts = (double)(mx.rows * mx.cols), xmax = 0;
    for (int j = 0; j < mx.candidates; j++) {
        sm_compress_candidate cd;
        sm_compress_get_candidate(c, i, j, &cd);
        double b = 8.0 * (double)cd.bytes / wts;
        if (b > xmax) xmax = b;
    }
    xmax = xmax > 17 ? 17 : ceil(xmax);
    if (xmax < 1) xmax = 1;
    double ylo = -4, yhi = 0.5;
    fprintf(f, "<svg class=\"curve\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">", CW, CH, CW,
            CH);
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
            "stroke=\"#999\"/>",
            ML, MT, CW - ML - MR, CH - MT - MB);
    for (int k = 0; k <= (int)xmax; k += xmax > 8 ? 2 : 1) {
        double x = ML + (CW - ML - MR) * k / xmax;
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%d</text>", x,
                CH - MB + 12, k);
    }
    for (int k = (int)ylo; k <= 0; k++) {
        double y = MT + (CH - MT - MB) * (yhi - k) / (yhi - ylo);
        fprintf(f,
                "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">1e%d</text>"
                "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>",
                ML - 4, y + 3, k, ML, CW - MR, y, y);
    }
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">bits per weight"
            "</text>",
            (CW + ML) / 2, CH - 4);
    for (int j = 0; j < mx.candidates; j++) {
        sm_compress_candidate cd;
        sm_compress_get_candidate(c, i, j, &cd);
        double b = 8.0 * (double)cd.bytes / wts, r = log10(rel_of(cd.error, mx.energy));
        double x = ML + (CW - ML - MR) * (b > xmax ? xmax : b) / xmax;
        double y = MT + (CH - MT - MB) * (yhi - r) / (yhi - ylo);
        fprintf(f, "<circle class=\"cand\" cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"><title>",
                x, y, k_colors[method_index(cd.method)]);
        esc(f, cd.spec);
        fprintf(f, ": %.3f bpw, rel. error %.4g</title></circle>", b, rel_of(cd.error, mx.energy));
        if (j == mx.chosen)
            fprintf(f,
                    "<circle class=\"chosen\" cx=\"%.1f\" cy=\"%.1f\" r=\"7\" fill=\"none\" "
                    "stroke=\"#000\" stroke-width=\"2\"/>",
                    x, y);
    }
    fputs("</svg>\n", f);
}

static void spectrum(FILE *f, const sm_compress_matrix *mx) {
    if (mx->nsigma < 2 || !(mx->sigma[0] > 0)) return;
    fprintf(f, "<svg class=\"spectrum\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">", CW, CH,
            CW, CH);
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
            "stroke=\"#999\"/><polyline fill=\"none\" stroke=\"#1f77b4\" points=\"",
            ML, MT, CW - ML - MR, CH - MT - MB);
    double top = log10(mx->sigma[0]), bot = top - 3;
    for (int j = 0; j < mx->nsigma; j++) {
        double v = mx->sigma[j] > 0 ? log10(mx->sigma[j]) : bot;
        if (v < bot) v = bot;
        double x = ML + (CW - ML - MR) * (double)j / (double)(mx->nsigma - 1);
        double y = MT + (CH - MT - MB) * (top - v) / (top - bot);
        fprintf(f, "%.1f,%.1f ", x, y);
    }
    fprintf(f,
            "\"/><text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">singular "
            "values 1..%d (log, 3 decades)</text></svg>\n",
            (CW + ML) / 2, CH - 4, mx->nsigma);
}

// Matrix i and its chosen candidate; false when nothing was chosen for it.
static bool chosen(const sm_compress *c, int i, sm_compress_matrix *mx, sm_compress_candidate *cd,
                   double *bpw) {
    sm_compress_get_matrix(c, i, mx);
    if (mx->chosen < 0) return false;
    sm_compress_get_candidate(c, i, mx->chosen, cd);
    *bpw = 8.0 * (double)cd->bytes / (double)(mx->rows * mx->cols);
    return true;
}

static void allocation(FILE *f, const sm_compress *c) {
    int n = sm_compress_count(c), W = 40 + 14 * n, H = 220;
    double ymax = 1, b;
    sm_compress_matrix mx;
    sm_compress_candidate cd;
    for (int i = 0; i < n; i++)
        if (chosen(c, i, &mx, &cd, &b) && b > ymax) ymax = b;
    ymax = ceil(ymax);
    fprintf(f, "<svg id=\"allocation\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">", W, H, W,
            H);
    for (int k = 0; k <= (int)ymax; k += ymax > 8 ? 2 : 1) {
        double y = 10 + (H - 40) * (1 - k / ymax);
        fprintf(f,
                "<text x=\"30\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%d</text>"
                "<line x1=\"34\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>",
                y + 3, k, W, y, y);
    }
    for (int i = 0; i < n; i++) {
        if (!chosen(c, i, &mx, &cd, &b)) continue;
        double h = (H - 40) * b / ymax;
        fprintf(f,
                "<rect class=\"bar\" x=\"%d\" y=\"%.1f\" width=\"11\" height=\"%.1f\" "
                "fill=\"%s\"><title>",
                36 + 14 * i, 10 + (H - 40) - h, h, k_colors[method_index(cd.method)]);
        esc(f, mx.name);
        fputs(": ", f);
        esc(f, cd.spec);
        fprintf(f, " (%.3f bpw)</title></rect>", b);
    }
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">matrices in "
            "checkpoint order; height: bits per weight</text></svg>\n",
            W / 2, H - 8);
}

sm_status sm_compress_report_html(const sm_compress *c, const char *path, bool force) {
    sm_atomic_file a;
    sm_status s = sm_atomic_open(&a, path, force);
    if (s != SM_OK) return s;
    FILE *f = a.f;
    fputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>structmat compress "
          "report</title><style>body{font-family:sans-serif;margin:20px}"
          ".matrix{display:inline-block;margin:8px;vertical-align:top}"
          "h3{font-size:13px;margin:2px}table{border-collapse:collapse}"
          "td,th{padding:2px 8px;border-bottom:1px solid #ddd;font-size:12px}</style></head>"
          "<body>\n<h1>structmat compress</h1>\n",
          f);
    int64_t bytes = 0, wts = sm_compress_weights(c);
    int n = sm_compress_count(c);
    for (int i = 0; i < n; i++) {
        sm_compress_matrix mx;
        sm_compress_get_matrix(c, i, &mx);
        if (mx.chosen >= 0) {
            sm_compress_candidate cd;
            sm_compress_get_candidate(c, i, mx.chosen, &cd);
            bytes += cd.bytes;
        }
    }
    fprintf(f,
            "<p id=\"summary\">%d matrices, %lld weights; chosen: %lld bytes = %.4f bits per "
            "weight (budget %lld bytes); objective: %s.</p>\n<p>",
            n, (long long)wts, (long long)bytes, 8.0 * (double)bytes / (double)wts,
            (long long)sm_compress_budget(c),
            sm_compress_objective(c) == SM_OBJECTIVE_ACTIVATION ? "activation tr(dW H dW^T)"
                                                                : "weight ||dW||_F^2");
    for (int k = 0; k < SM_M_COUNT; k++)
        fprintf(f, "<span style=\"color:%s\">&#9679; %s</span> ", k_colors[k], sm_method_names[k]);
    fputs("</p>\n<h2>Allocation</h2>\n", f);
    allocation(f, c);
    fputs("<h2>Matrices</h2>\n<p>Relative error sqrt(error / energy) in the objective against "
          "bits per weight, every candidate; the ring marks the choice.</p>\n",
          f);
    for (int i = 0; i < n; i++) {
        sm_compress_matrix mx;
        sm_compress_get_matrix(c, i, &mx);
        fputs("<div class=\"matrix\"><h3>", f);
        esc(f, mx.name);
        fprintf(f, " (%lldx%lld)</h3>", (long long)mx.rows, (long long)mx.cols);
        curve(f, c, i);
        spectrum(f, &mx);
        if (mx.chosen >= 0) {
            sm_compress_candidate cd;
            sm_compress_get_candidate(c, i, mx.chosen, &cd);
            fputs("<div>chosen: <code>", f);
            esc(f, cd.spec);
            fprintf(f, "</code>, %.3f bpw</div>",
                    8.0 * (double)cd.bytes / (double)(mx.rows * mx.cols));
        }
        fputs("</div>\n", f);
    }
    fputs("</body></html>\n", f);
    if (ferror(f)) {
        sm_atomic_abort(&a);
        return sm_fail(SM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    return sm_atomic_commit(&a);
}
