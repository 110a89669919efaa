"""Credentials of the test server (a throwaway admin on 127.0.0.1, made for the test session only)."""

TOKEN_ENV = "INSTVL_TEST_LS_TOKEN"
TEST_TOKEN = "instvl-test-token-0123456789"
TEST_USER, TEST_PASSWORD = "admin@instvl.test", "instvl-test-password"
