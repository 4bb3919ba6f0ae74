"""The data stage: sources -> records -> split -> mix -> manifest."""
