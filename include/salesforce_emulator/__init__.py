"""The bundled Salesforce emulator (HTTPS, REST, SOAP login, Bulk 2.0); never imported by the engine."""
