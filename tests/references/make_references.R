#!/usr/bin/env Rscript
# Reference values from R for syndesmo's engines, stored so that the agreement tests
# (tests/fitting/test_references.py) run on any machine, with or without R.
#
#   Rscript tests/references/make_references.R        # from the repository root
#
# writes tests/references/data/*.csv (the inputs: R's own data sets and a simulated
# VU frame; every fit below reads these files back, so R and Python read the same
# bytes) and one folder per case with the results (CSV tables, fit.json) and a
# README.md naming the R call and the R and package versions. The script is
# deterministic: run again with the same R and packages, it rewrites the same bytes
# (`git diff --exit-code tests/references` shows it).
#
# Needs R with lme4, geepack, MASS, minqa and jsonlite (Debian 12: r-cran-lme4,
# r-cran-geepack, r-cran-jsonlite; MASS and minqa come with lme4).

suppressPackageStartupMessages({
  library(lme4)
  library(geepack)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
root <- if (length(script)) dirname(normalizePath(script)) else "tests/references"
data_dir <- file.path(root, "data")
dir.create(data_dir, showWarnings = FALSE, recursive = TRUE)

versions <- sprintf(
  "%s; lme4 %s, Matrix %s, minqa %s, geepack %s, MASS %s, jsonlite %s",
  R.version.string, packageVersion("lme4"), packageVersion("Matrix"),
  packageVersion("minqa"), packageVersion("geepack"), packageVersion("MASS"),
  packageVersion("jsonlite")
)

num <- function(x) ifelse(is.na(x), "NA", sprintf("%.15g", x))

write_table <- function(df, path) {
  # numbers unquoted with 15 significant digits, text quoted, no row names
  numeric <- vapply(df, is.numeric, logical(1))
  for (k in names(df)[numeric]) df[[k]] <- num(df[[k]])
  write.csv(df, path, row.names = FALSE, quote = which(!numeric), na = "NA")
}

write_case <- function(case, about, call, tables = list(), scalars = list()) {
  dir <- file.path(root, case)
  dir.create(dir, showWarnings = FALSE)
  for (name in names(tables)) write_table(tables[[name]], file.path(dir, paste0(name, ".csv")))
  scalars$case <- case
  scalars$call <- call
  scalars$versions <- versions
  write_json(scalars, file.path(dir, "fit.json"), auto_unbox = TRUE, digits = NA,
             pretty = TRUE)
  writeLines(c(
    paste0("# ", case),
    "",
    about,
    "",
    "R call (data read back from `../data/`):",
    "",
    "```r",
    call,
    "```",
    "",
    paste0("Files: ", paste(c(paste0(names(tables), ".csv"), "fit.json"), collapse = ", "),
           ". Made by `make_references.R` with ", versions, ".")
  ), file.path(dir, "README.md"))
  cat("wrote", case, "\n")
}

# --- inputs ----------------------------------------------------------------------

# lme4's cbpp: new cases of contagious bovine pleuropneumonia (incidence out of size)
# in 15 herds at 4 periods; 56 rows, herd 8 has one.
write.csv(lme4::cbpp[, c("herd", "period", "incidence", "size")],
          file.path(data_dir, "cbpp.csv"), row.names = FALSE)
# geepack's ohio: wheeze (resp) of 537 children at ages 7-10 (age -2..1), maternal smoking.
write.csv(geepack::ohio[, c("resp", "id", "age", "smoke")],
          file.path(data_dir, "ohio.csv"), row.names = FALSE)

# A simulated VU frame with a known truth, laid out like syndesmo's analysis frame
# for new syndesmophytes: 160 patients, each with the 4-12 of its 12 mSASSS VUs still
# at risk (no corner >= 2 at baseline); binary MRI inflammation at baseline clustered
# by patient (about a third of VUs, as in ASSERT-like cohorts); patient-level arm and
# baseline mSASSS; VU-level region. True conditional OR of mri 2.0, random-intercept
# SD 1.2 (strong clustering of new bone within patients).
RNGkind("Mersenne-Twister", "Inversion", "Rejection")
set.seed(20120309)
vus <- c("C2/3", "C3/4", "C4/5", "C5/6", "C6/7", "C7/T1",
         "T12/L1", "L1/2", "L2/3", "L3/4", "L4/5", "L5/S1")
n_patients <- 160
rows <- lapply(seq_len(n_patients), function(i) {
  k <- sample(4:12, 1)
  at_risk <- sort(sample(12, k))
  arm <- if (runif(1) < 0.5) "infliximab" else "placebo"
  msasss <- rpois(1, 12)
  activity <- rnorm(1)
  u <- rnorm(1, 0, 1.2)
  mri <- rbinom(k, 1, plogis(-0.7 + 0.9 * activity))
  region <- ifelse(at_risk <= 6, "cervical", "lumbar")
  eta <- -3.8 + log(2) * mri - 0.2 * (arm == "infliximab") + 0.3 * (region == "lumbar") +
    0.04 * msasss + u
  data.frame(patient = sprintf("P%03d", i), vu = vus[at_risk],
             new_syndesmophyte = rbinom(k, 1, plogis(eta)), mri = mri, arm = arm,
             region = region, msasss_baseline = msasss)
})
write.csv(do.call(rbind, rows), file.path(data_dir, "vu.csv"), row.names = FALSE)

cbpp <- read.csv(file.path(data_dir, "cbpp.csv"))
cbpp$herd <- factor(cbpp$herd)
cbpp$period <- factor(cbpp$period)
ohio <- read.csv(file.path(data_dir, "ohio.csv"))
vu <- read.csv(file.path(data_dir, "vu.csv"))
vu$patient <- factor(vu$patient)
vu$arm <- factor(vu$arm, levels = c("placebo", "infliximab"))
vu$region <- factor(vu$region)

# --- glmer: fixed effects, SEs, SD, logLik, VarCorr, ranef, profile CIs --------------

tight <- "glmerControl(tolPwrss = 1e-12)"

coef_table <- function(m, se) {
  data.frame(term = names(m), estimate = unname(m), std_error = unname(se))
}

vcov_table <- function(v) {
  v <- as.matrix(v)
  data.frame(term = rownames(v), v, check.names = FALSE, row.names = NULL)
}

glmer_case <- function(case, about, formula, data_name, nagq, profile = FALSE) {
  call <- sprintf(
    "glmer(%s, data = %s, family = binomial, nAGQ = %d,\n      control = %s)",
    formula, data_name, nagq, tight)
  m <- eval(parse(text = call))
  v <- as.matrix(vcov(m))
  tables <- list(
    coef = coef_table(fixef(m), sqrt(diag(v))),
    vcov = vcov_table(v),
    varcorr = as.data.frame(VarCorr(m)),
    ranef = as.data.frame(ranef(m, condVar = TRUE))
  )
  scalars <- list(
    nagq = nagq,
    loglik = as.numeric(logLik(m)),
    deviance = deviance(m),
    sigma = unname(getME(m, "theta")),
    nobs = nobs(m),
    ngrps = unname(ngrps(m)),
    is_singular = isSingular(m),
    check_conv = as.list(m@optinfo$conv$lme4$messages)
  )
  if (profile) {
    # confint() profiles through the fitted object's environment and leaves it changed
    # (ranef() afterwards differs), so it runs last, on its own refit.
    ci <- suppressMessages(confint(refit(m), method = "profile", level = 0.95))
    tables$profile <- data.frame(
      term = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]), level = 0.95)
    call <- paste0(call, "\nconfint(m, method = \"profile\", level = 0.95)")
  }
  write_case(case, about, call, tables, scalars)
}

cbpp_formula <- "cbind(incidence, size - incidence) ~ period + (1 | herd)"
ohio_formula <- "resp ~ age + smoke + (1 | id)"
vu_formula <- "new_syndesmophyte ~ mri + arm + region + msasss_baseline + (1 | patient)"

glmer_case("glmer_cbpp_laplace",
           "lme4's glmer on cbpp (binomial counts), Laplace, with lme4's profile CIs.",
           cbpp_formula, "cbpp", 1, profile = TRUE)
glmer_case("glmer_cbpp_agq15",
           "lme4's glmer on cbpp (binomial counts), adaptive Gauss-Hermite with 15 nodes.",
           cbpp_formula, "cbpp", 15)
glmer_case("glmer_vu_laplace",
           "lme4's glmer on the simulated VU frame (binary), Laplace.",
           vu_formula, "vu", 1)
glmer_case("glmer_vu_agq15",
           "lme4's glmer on the simulated VU frame (binary), adaptive Gauss-Hermite, 15 nodes.",
           vu_formula, "vu", 15)
glmer_case("glmer_ohio_laplace",
           "lme4's glmer on ohio (binary), Laplace.",
           ohio_formula, "ohio", 1)
glmer_case("glmer_ohio_agq15",
           "lme4's glmer on ohio (binary), adaptive Gauss-Hermite with 15 nodes.",
           ohio_formula, "ohio", 15)

# --- glmer: exact profile CIs from lme4's own deviance function --------------------
# lme4's confint(method = "profile") evaluates the profile on a grid and interpolates
# by splines: on the VU frame its lower end for the intercept sits 2.3e-3 inside the
# chi-square level of lme4's own deviance, and on ohio lme4 1.1-31's profile() stops
# ("Profiling over both the residual variance and fixed effects is not numerically
# consistent"). These references profile lme4's deviance function (devFunOnly = TRUE,
# tight tolPwrss) directly: bobyqa over the other parameters at each fixed value,
# uniroot on the signed root deviance. Exact up to the optimiser tolerances.

devfun_profile <- function(formula, data, level = 0.95) {
  ctl <- glmerControl(tolPwrss = 1e-12)
  m <- glmer(formula, data = data, family = binomial, nAGQ = 1, control = ctl)
  dev <- glmer(formula, data = data, family = binomial, nAGQ = 1, control = ctl,
               devFunOnly = TRUE)
  par <- c(getME(m, "theta"), fixef(m))
  dhat <- -2 * c(logLik(m))
  se <- sqrt(diag(solve(optimHess(par, dev) / 2)))
  z <- sqrt(qchisq(level, 1))
  lower <- c(0, rep(-Inf, length(par) - 1))
  last <- par
  zeta <- function(k, b) {
    free <- setdiff(seq_along(par), k)
    fn <- function(x) {
      p <- par
      p[k] <- b
      p[free] <- x
      dev(p)
    }
    o <- minqa::bobyqa(last[free], fn, lower = lower[free],
                       control = list(rhobeg = 0.02, rhoend = 1e-8))
    last[free] <<- o$par
    sign(b - par[k]) * sqrt(max(o$fval - dhat, 0))
  }
  ends <- sapply(seq_along(par), function(k) sapply(c(-1, 1), function(s) {
    last <<- par
    if (k == 1 && s < 0 && zeta(1, 0) > -z) return(0)
    last <<- par
    uniroot(function(b) zeta(k, b) - s * z, sort(par[k] + s * z * se[k] * c(0.7, 1.3)),
            extendInt = "yes", tol = 1e-8)$root
  }))
  data.frame(term = c(".sig01", names(fixef(m))), lower = ends[1, ], upper = ends[2, ],
             level = level)
}

devfun_case <- function(case, what, formula, data_name) {
  call <- paste0(
    "dev <- glmer(", formula, ", data = ", data_name, ", family = binomial,\n",
    "             nAGQ = 1, control = glmerControl(tolPwrss = 1e-12), devFunOnly = TRUE)\n",
    "# at each fixed value: minqa::bobyqa over the other parameters (rhoend = 1e-8);\n",
    "# endpoints: uniroot (tol = 1e-8) of the signed root deviance at -+sqrt(qchisq(0.95, 1))")
  write_case(case,
             paste0("Profile CIs (95%) of ", what, ", Laplace, from lme4's deviance ",
                    "function profiled by minqa::bobyqa and uniroot (see make_references.R ",
                    "for why not lme4's confint)."),
             call,
             list(profile = devfun_profile(as.formula(formula), get(data_name))))
}

devfun_case("profile_glmer_ohio_devfun", "glmer on ohio", ohio_formula, "ohio")
devfun_case("profile_glmer_vu_devfun", "glmer on the simulated VU frame", vu_formula, "vu")

# --- geepack: exchangeable GEE, robust (sandwich) SEs --------------------------------

gee_control <- "geese.control(epsilon = 1e-10, maxit = 500)"

gee_case <- function(case, about, formula, data_name, id) {
  call <- sprintf(
    "geeglm(%s, id = %s, data = %s, family = binomial,\n       corstr = \"exchangeable\", control = %s)",
    formula, id, data_name, gee_control)
  g <- eval(parse(text = call))
  s <- summary(g)
  write_case(case, about, call,
             list(coef = coef_table(coef(g), s$coefficients[, "Std.err"])),
             list(alpha = unname(g$geese$alpha), error = g$geese$error,
                  nobs = length(g$y), nclusters = length(unique(g$id))))
}

gee_case("geeglm_ohio_exchangeable",
         "geepack's geeglm on ohio, exchangeable working correlation, sandwich SEs.",
         "resp ~ age + smoke", "ohio", "id")
gee_case("geeglm_vu_exchangeable",
         "geepack's geeglm on the simulated VU frame, exchangeable, sandwich SEs.",
         "new_syndesmophyte ~ mri + arm + region + msasss_baseline", "vu", "patient")

# --- glm: logistic regression ignoring clustering, with MASS's profile CIs ---------

glm_case <- function(case, about, formula, data_name) {
  # glm's default epsilon = 1e-8 leaves its SEs (from the weights of the last-but-one
  # iteration) up to ~4e-6 from the maximum's on the VU frame: fit to 1e-14.
  call <- sprintf(
    "glm(%s, data = %s, family = binomial,\n    control = glm.control(epsilon = 1e-14, maxit = 100))",
    formula, data_name)
  m <- eval(parse(text = call))
  ci <- suppressMessages(confint(m, level = 0.9))
  write_case(case, about, paste0(call, "\nconfint(m, level = 0.9)  # MASS's profile"),
             list(coef = coef_table(coef(m), sqrt(diag(vcov(m)))),
                  vcov = vcov_table(vcov(m)),
                  profile = data.frame(term = rownames(ci), lower = unname(ci[, 1]),
                                       upper = unname(ci[, 2]), level = 0.9)),
             list(loglik = as.numeric(logLik(m)), nobs = nobs(m),
                  converged = m$converged))
}

glm_case("glm_ohio", "R's glm on ohio (binary), clustering ignored.",
         "resp ~ age + smoke", "ohio")
glm_case("glm_cbpp", "R's glm on cbpp (binomial counts), clustering ignored.",
         "cbind(incidence, size - incidence) ~ period", "cbpp")
glm_case("glm_vu", "R's glm on the simulated VU frame, clustering ignored.",
         "new_syndesmophyte ~ mri + arm + region + msasss_baseline", "vu")
