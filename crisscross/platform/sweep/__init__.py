"""`crisscross sweep`: the sweep file checked (`plan`), Ray Tune over pretrainings (`run`), one
trial (`trial`), what a trial tells Tune (`report`) and what a sweep leaves (`results`)."""
