"""Start and stop the real Apache Kafka (KRaft) the project runs on, and declare its topics."""
