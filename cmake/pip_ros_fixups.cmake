# The pip-installed ROS wheels export include directories of the machine they were built on
# (/opt/python/...); drop those so CMake does not stop on non-existent paths. Harmless on a
# normal ROS install. Include after the find_package() calls.
if(CMAKE_VERSION VERSION_GREATER_EQUAL "3.21")
  get_property(_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_t IN LISTS _imported)
    get_target_property(_inc ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(_inc)
      list(FILTER _inc EXCLUDE REGEX "^/opt/python/")
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_inc}")
    endif()
  endforeach()
endif()
