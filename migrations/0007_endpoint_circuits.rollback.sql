-- depends: 0006_retention
DROP TABLE IF EXISTS endpoint_circuits;
