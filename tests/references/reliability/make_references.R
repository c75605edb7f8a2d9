# Reference values for tests/analysis/test_reliability.py, made with R's psych package.
#
# Run from the repository root:
#     Rscript tests/references/reliability/make_references.R
# (R 4.2.2 and psych 2.2.9 from Debian 12's r-base-core and r-cran-psych made the
# stored files.) The script simulates its own data with a fixed seed and writes,
# beside itself:
#   ratings_three_readers.csv   40 patients x 3 readers, totals-like whole numbers
#   ratings_unbalanced.csv      the same with 5 ratings missing (4 patients)
#   icc_three_readers.csv       psych::ICC(x, lmer = FALSE): the two-way ANOVA
#   icc_three_readers_lmer.csv  psych::ICC(x) (default lmer = TRUE): REML variance
#                               components, equal to the ANOVA's on balanced data
#                               up to lme4's convergence tolerance
#   icc_unbalanced.csv          psych::ICC(na.omit(x), lmer = FALSE): listwise deletion
#   icc_unbalanced_lmer.csv     psych::ICC(x) (its default lmer = TRUE: REML on all
#                               ratings), for information only; not what syndesmo does
#   icc_shrout_fleiss.csv       psych::ICC on Shrout & Fleiss (1979), Table 2
#   kappa_binary.csv            300 VUs x 3 readers, 0/1 status
#   kappa_pairs.csv             psych::cohen.kappa for each reader pair
#   session.txt                 R and psych versions

suppressPackageStartupMessages(library(psych))
args <- commandArgs(trailingOnly = FALSE)
file_arg <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(file_arg)) dirname(normalizePath(file_arg)) else "."
out <- function(name) file.path(here, name)
write_ref <- function(df, name) {
  write.csv(df, out(name), row.names = FALSE, na = "")
}

icc_frame <- function(res) {
  r <- res$results
  data.frame(
    type = r$type, icc = r$ICC, F = r$F, df1 = r$df1, df2 = r$df2, p = r$p,
    ci_low = r[["lower bound"]], ci_high = r[["upper bound"]],
    n_obs = res$n.obs, n_judge = res$n.judge
  )
}

# --- ICC: three readers ----------------------------------------------------------
set.seed(20240612)
n <- 40
true_score <- round(rnorm(n, mean = 20, sd = 8))
bias <- c(0, 3, -2)
x <- sapply(bias, function(b) pmax(0, round(true_score + b + rnorm(n, sd = 2.5))))
colnames(x) <- c("reader_1", "reader_2", "reader_3")
ratings <- data.frame(patient = sprintf("P%03d", seq_len(n)), x)
write_ref(ratings, "ratings_three_readers.csv")
write_ref(icc_frame(ICC(x, lmer = FALSE)), "icc_three_readers.csv")
write_ref(icc_frame(ICC(x)), "icc_three_readers_lmer.csv")

# --- ICC: unbalanced (some ratings missing) ---------------------------------------
xu <- x
xu[3, 2] <- NA
xu[11, 1] <- NA
xu[11, 3] <- NA
xu[25, 3] <- NA
xu[38, 2] <- NA
write_ref(data.frame(patient = ratings$patient, xu), "ratings_unbalanced.csv")
write_ref(icc_frame(ICC(na.omit(xu), lmer = FALSE)), "icc_unbalanced.csv")
write_ref(icc_frame(suppressMessages(ICC(xu))), "icc_unbalanced_lmer.csv")

# --- ICC: Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges --------------------
sf <- matrix(c(9, 2, 5, 8, 6, 1, 3, 2, 8, 4, 6, 8, 7, 1, 2, 6, 10, 5, 6, 9, 6, 2, 4, 7),
             ncol = 4, byrow = TRUE)
write_ref(icc_frame(ICC(sf, lmer = FALSE)), "icc_shrout_fleiss.csv")

# --- Cohen's kappa: binary VU status, three readers --------------------------------
set.seed(20240613)
m <- 300
truth <- rbinom(m, 1, 0.3)
flip <- function(p) ifelse(runif(m) < p, 1 - truth, truth)
k <- data.frame(reader_1 = flip(0.06), reader_2 = flip(0.10), reader_3 = flip(0.15))
write_ref(k, "kappa_binary.csv")
pairs <- list(c(1, 2), c(1, 3), c(2, 3))
rows <- lapply(pairs, function(p) {
  ck <- cohen.kappa(cbind(k[[p[1]]], k[[p[2]]]))
  data.frame(
    reader_a = p[1], reader_b = p[2], kappa = ck$kappa, var_kappa = ck$var.kappa,
    ci_low = ck$confid[1, 1], ci_high = ck$confid[1, 3], n_obs = ck$n.obs
  )
})
write_ref(do.call(rbind, rows), "kappa_pairs.csv")

writeLines(
  c(R.version.string, paste("psych", as.character(packageVersion("psych")))),
  out("session.txt")
)
