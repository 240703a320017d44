import sys
print("demo placeholder")
