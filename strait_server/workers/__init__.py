"""The worker plane: long-lived worker processes take runs of worker jobs over WorkerService.Connect."""
