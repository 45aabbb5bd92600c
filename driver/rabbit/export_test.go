package rabbit

// TestURL is the broker URL of the tests, for the external test package.
var TestURL = testURL
