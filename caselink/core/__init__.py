"""The bottom layer every other part of caselink builds on: settings, Kafka client factories,
deterministic ids and YAML loading with line numbers. It imports nothing else of caselink."""
