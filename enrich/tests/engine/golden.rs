//! Golden summaries of the fixture trips (added with the fixtures).
