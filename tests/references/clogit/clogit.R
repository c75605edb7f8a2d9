# Reference values for syndesmo's engine "clogit" (tests/fitting/test_registry.py).
#
# Conditional logistic regression of a new syndesmophyte on MRI inflammation at
# baseline, with patients as strata, by R's survival::clogit with method = "exact"
# (clogit's default): the exact conditional likelihood, which statsmodels'
# ConditionalLogit computes too. Several patients have 2 or 3 events, so the
# approximate methods ("approximate"/"breslow", "efron") give other numbers.
#
# The input vu_frame.csv is written by make_frame.py (simulated cohort, seed 2024,
# 120 patients). "infliximab" is constant within every patient: clogit gives it NA
# and syndesmo leaves it out with a warning.
#
# Run from the repository root:  Rscript tests/references/clogit/clogit.R
# Made with R 4.2.2, survival 3.5-3 (Debian 12).

library(survival)
here <- "tests/references/clogit"
d <- read.csv(file.path(here, "vu_frame.csv"))
m <- clogit(new_syndesmophyte ~ mri + lumbar + baseline_corner + infliximab + strata(patient),
            data = d, method = "exact")
b <- coef(m)
ok <- !is.na(b)
se <- sqrt(diag(vcov(m)))
out <- rbind(
  data.frame(quantity = "estimate", term = names(b)[ok], value = unname(b[ok])),
  data.frame(quantity = "se", term = names(b)[ok], value = unname(se[ok])),
  data.frame(quantity = "not_estimated", term = names(b)[!ok], value = NA_real_),
  data.frame(quantity = c("loglik", "loglik_null", "n", "nevent"), term = "",
             value = c(m$loglik[2], m$loglik[1], m$n, m$nevent))
)
write.csv(out, file.path(here, "clogit_exact.csv"), row.names = FALSE)
cat(sprintf("R %s, survival %s\n", getRversion(), packageVersion("survival")))
