"""The best-trial report: facts from storage, plots, and the html/md/json pages."""
