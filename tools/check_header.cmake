# Regenerates the header into ${FRESH} through build.rs and fails if it
# differs from the committed include/kpalloc.h.
execute_process(
  COMMAND ${CMAKE_COMMAND} -E env KPALLOC_HEADER_OUT=${FRESH} ${CARGO} build --quiet --lib
  WORKING_DIRECTORY ${SOURCE_DIR}
  RESULT_VARIABLE built)
if(NOT built EQUAL 0)
  message(FATAL_ERROR "cargo build failed while regenerating the header")
endif()
execute_process(
  COMMAND ${CMAKE_COMMAND} -E compare_files ${FRESH} ${SOURCE_DIR}/include/kpalloc.h
  RESULT_VARIABLE differs)
if(NOT differs EQUAL 0)
  message(FATAL_ERROR "include/kpalloc.h is stale: run `KPALLOC_UPDATE_HEADER=1 cargo build` and commit it")
endif()
message(STATUS "include/kpalloc.h is up to date")
