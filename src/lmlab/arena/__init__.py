"""Arena: battles (judge-made or voted in the battle page), Bradley-Terry ratings with bootstrap
intervals, online Elo, style control, and the leaderboard."""
