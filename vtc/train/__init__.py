"""Training on cached tokens: question-answer data (the loop itself is vtc.stages.train)."""
