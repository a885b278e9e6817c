"""Speech pipeline: voice activity, commands, wake phrase, transcripts."""
